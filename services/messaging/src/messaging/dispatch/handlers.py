"""The dispatcher's consumers: billing's answers to our hold requests, and auth's OTP requests.

- group `messaging-billing`, `billing.credits.reserved.v1` / `rejected.v1` (reference kind
  `sms`; `order` answers are for number orders, not built yet, and are skipped): reserved makes
  the message due for dispatch; rejected ends it `rejected` (billing holds nothing).
- group `messaging-otp`, `auth.otp.requested.v2` (the code sealed, `common.sealed`; v1, with the
  code in the clear, is still taken): one outbound message on the `otp` route for the platform
  tenant, due at once, never billed. A code no key opens goes to the DLQ.

Both wake the dispatcher in this process once their transaction has committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from common.contracts import EventEnvelope
from common.contracts.auth.v1 import OtpRequestedV1
from common.contracts.auth.v2 import OtpRequestedV2
from common.contracts.billing.v1 import CreditsRejectedV1, CreditsReservedV1
from common.ids import parse_uuid
from common.messaging.consumer import DeadLetter, EventConsumer
from common.sealed import Unsealable, unseal
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from messaging.dispatch import repository as repo
from messaging.dispatch.dispatcher import OTP, STANDARD
from messaging.dispatch.otp import PLATFORM_TENANT, otp_text, queue_code_sms
from messaging.settings import MessagingSettings
from messaging.sms import status as st

log = logging.getLogger("messaging.dispatch")

RESERVED = "billing.credits.reserved.v1"
REJECTED = "billing.credits.rejected.v1"
OTP_REQUESTED = "auth.otp.requested.v2"
OTP_REQUESTED_V1 = "auth.otp.requested.v1"  # no longer produced: in-flight events of before


def _sms_ids(events: Sequence[EventEnvelope[Any]]) -> list[tuple[uuid.UUID, Any]]:
    """(message id, payload) of the SMS answers, each message once (the first answer wins)."""
    seen: dict[uuid.UUID, Any] = {}
    for event in events:
        if event.data.reference_kind != "sms":
            continue
        message_id = parse_uuid(event.data.reference)
        if message_id is not None and message_id not in seen:
            seen[message_id] = event.data
    return list(seen.items())


# -- billing replies -------------------------------------------------------------------------------


async def on_reserved_batch(session: AsyncSession, events: list[EventEnvelope[CreditsReservedV1]]) -> None:
    """Holds placed: the messages are due now (one statement for the whole run)."""
    await repo.mark_reserved(
        session, [(mid, data.amount_minor, data.currency) for mid, data in _sms_ids(events)]
    )


async def on_rejected_batch(session: AsyncSession, events: list[EventEnvelope[CreditsRejectedV1]]) -> None:
    """No credit: the messages end `rejected` (history and messaging.sms.status.v1 by status.apply)."""
    answers = dict(_sms_ids(events))
    ids = await repo.mark_rejected(session, list(answers))
    await st.apply(
        session,
        [
            st.Change(mid, st.REJECTED, detail=f"billing: {answers[mid].reason}", error=answers[mid].reason)
            for mid in ids
        ],
    )


def billing_consumer(
    settings: MessagingSettings,
    sessions: async_sessionmaker[AsyncSession],
    wake: Callable[[str], None],
    group_id: str = "messaging-billing",
) -> EventConsumer:
    def committed(events: Sequence[EventEnvelope[Any]]) -> None:
        if any(e.type == RESERVED for e in events):
            wake(STANDARD)

    # A run of replies in one call: one UPDATE per run instead of one per reply.
    return EventConsumer(
        settings, sessions, group_id, {},
        batch_handlers={RESERVED: on_reserved_batch, REJECTED: on_rejected_batch}, on_committed=committed,
    )


# -- OTP -------------------------------------------------------------------------------------------


def make_otp_handler(settings: MessagingSettings):  # noqa: ANN201
    sender = settings.sms_otp_sender or settings.sms_default_sender

    async def on_otp_requested(
        session: AsyncSession, event: EventEnvelope[OtpRequestedV2] | EventEnvelope[OtpRequestedV1]
    ) -> None:
        otp = event.data  # the opened code must never be logged
        if isinstance(otp, OtpRequestedV2):
            try:
                code = unseal(settings.otp_seal_keys, otp.sealed_code)
            except Unsealable as exc:
                # Tampered, or sealed under a key this worker lacks: retrying cannot help.
                raise DeadLetter("otp: the sealed code opens with none of SB_OTP_SEAL_KEYS") from exc
        else:
            code = otp.code  # v1, written before codes were sealed
        now = datetime.now(UTC)
        expires_at = datetime.fromisoformat(otp.expires_at)
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= now:
            # A code that can no longer be used (a backlog after an outage): do not send it.
            log.info("otp expired before it could be sent", extra={"challenge_id": otp.challenge_id})
            return
        tenant = PLATFORM_TENANT
        if event.tenantid:
            tenant = parse_uuid(event.tenantid) or PLATFORM_TENANT
        await queue_code_sms(
            session, tenant=tenant, sender=sender, to=otp.phone,
            body=otp_text(settings.sms_otp_text, code, expires_at, now),
            external_id=f"otp:{otp.challenge_id}", expires_at=expires_at, detail=f"OTP ({otp.purpose})",
        )

    return on_otp_requested


def otp_consumer(
    settings: MessagingSettings,
    sessions: async_sessionmaker[AsyncSession],
    wake: Callable[[str], None],
    group_id: str = "messaging-otp",
) -> EventConsumer:
    handler = make_otp_handler(settings)
    return EventConsumer(
        settings, sessions, group_id, {OTP_REQUESTED: handler, OTP_REQUESTED_V1: handler},
        on_committed=lambda events: wake(OTP),
    )
