"""Billing's answers and OTP requests, handled in the consumer's transaction (rolled back here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from common.contracts import EventEnvelope
from common.contracts.auth.v1 import OtpRequestedV1
from common.contracts.auth.v2 import OtpRequestedV2
from common.contracts.billing.v1 import CreditsRejectedV1, CreditsReservedV1
from common.contracts.registry import type_of
from common.ids import uuid7
from common.messaging.consumer import DeadLetter
from common.sealed import LOCAL_SEAL_KEY, seal
from cryptography.fernet import Fernet
from messaging.dispatch.handlers import (
    make_otp_handler,
    on_rejected_batch,
    on_reserved_batch,
)
from messaging.dispatch.otp import PLATFORM_TENANT
from messaging.settings import MessagingSettings
from sqlalchemy import text

from tests.support import rollback_session

SETTINGS = MessagingSettings()


def envelope(payload, subject: str, tenant: str | None = None) -> EventEnvelope:  # noqa: ANN001
    return EventEnvelope[type(payload)](  # type: ignore[misc]
        id=str(uuid.uuid4()), source="/switchboard/test", type=type_of(payload), subject=subject,
        time=datetime.now(UTC), tenantid=tenant, data=payload,
    )


async def pending(session, n: int) -> tuple[uuid.UUID, list[uuid.UUID]]:  # noqa: ANN001
    tenant, conv, ids = uuid.uuid4(), uuid7(), [uuid7() for _ in range(n)]
    await session.execute(
        text("INSERT INTO conversations (id, tenant_id, our_number, peer_number) VALUES (:c, :t, '+18005550100', '+1')"),
        {"c": conv, "t": tenant},
    )
    await session.execute(
        text(
            "INSERT INTO messages (id, tenant_id, conversation_id, direction, from_number, to_number, body, encoding,"
            " segments, status, billing) SELECT id, :t, :c, 'outbound', '+18005550100', '+14155550123', 'hi',"
            " 'GSM-7', 1, 'queued', 'pending' FROM unnest(CAST(:ids AS uuid[])) AS id"
        ),
        {"t": tenant, "c": conv, "ids": ids},
    )
    return tenant, ids


async def state(session, ids) -> list[tuple]:  # noqa: ANN001
    result = await session.execute(
        text("SELECT status, billing, price_minor, next_attempt_at IS NOT NULL AS due, error FROM messages"
             " WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids},
    )
    return [tuple(r) for r in result]


def reserved(tenant, mid, kind: str = "sms") -> EventEnvelope:  # noqa: ANN001
    return envelope(CreditsReservedV1(reference=str(mid), reference_kind=kind, tenant_id=str(tenant),
                                      hold_id=str(uuid.uuid4()), amount_minor=7, currency="USD"), str(mid))


def rejected(tenant, mid) -> EventEnvelope:  # noqa: ANN001
    return envelope(CreditsRejectedV1(reference=str(mid), reference_kind="sms", tenant_id=str(tenant),
                                      reason="insufficient_credits", amount_minor=7), str(mid))


async def test_a_hold_makes_the_message_due_once_and_a_late_rejection_changes_nothing():
    async with rollback_session(SETTINGS) as session:
        tenant, ids = await pending(session, 3)
        await on_reserved_batch(session, [reserved(tenant, m) for m in ids[:2]] + [reserved(tenant, ids[2], "order")])
        assert await state(session, ids) == [("queued", "reserved", 7, True, None)] * 2 + [
            ("queued", "pending", None, False, None)]
        await on_rejected_batch(session, [rejected(tenant, ids[0])])  # out of order, or a replay
        assert (await state(session, ids))[0] == ("queued", "reserved", 7, True, None)
        # Someone else's references (order ids, test strings) are skipped, not errors.
        await on_reserved_batch(session, [envelope(CreditsReservedV1(
            reference="m-not-a-uuid", reference_kind="sms", tenant_id=str(tenant), hold_id="h", amount_minor=1,
            currency="USD"), "m-not-a-uuid")])


async def test_a_refused_hold_rejects_the_message_with_history_and_a_status_event():
    async with rollback_session(SETTINGS) as session:
        tenant, ids = await pending(session, 2)
        await on_rejected_batch(session, [rejected(tenant, m) for m in ids])
        assert await state(session, ids) == [("rejected", "rejected", None, False, "insufficient_credits")] * 2
        events = await session.execute(
            text("SELECT envelope->'data'->>'status' FROM outbox WHERE key = ANY(:k)"), {"k": [str(m) for m in ids]}
        )
        assert [r[0] for r in events] == ["rejected", "rejected"]
        await on_reserved_batch(session, [reserved(tenant, ids[0])])  # a late hold does not revive it
        assert (await state(session, ids))[0][1] == "rejected"


async def test_an_otp_request_stores_one_due_unbilled_message_per_challenge():
    handler = make_otp_handler(SETTINGS)
    challenge, phone = str(uuid.uuid4()), f"+1415555{uuid.uuid4().int % 10000:04d}"
    otp = OtpRequestedV2(challenge_id=challenge, phone=phone, sealed_code=seal(SETTINGS.otp_seal_keys, "314159"),
                         purpose="login", expires_at=(datetime.now(UTC) + timedelta(minutes=5)).isoformat())
    async with rollback_session(SETTINGS) as session:
        await handler(session, envelope(otp, phone))
        await handler(session, envelope(otp, phone))  # redelivered under a new envelope id
        rows = (await session.execute(
            text("SELECT tenant_id, route, billing, status, body, from_number, next_attempt_at IS NOT NULL AS due"
                 " FROM messages WHERE external_id = :e"), {"e": f"otp:{challenge}"})).all()
        assert len(rows) == 1
        r = rows[0]
        assert (r.tenant_id, r.route, r.billing, r.status, r.due) == (PLATFORM_TENANT, "otp", "none", "queued", True)
        assert r.body == "Your Switchboard code is 314159. It expires in 5 minutes."
        assert r.from_number == SETTINGS.sms_default_sender

        stale = otp.model_copy(update={"challenge_id": str(uuid.uuid4()),
                                       "expires_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()})
        await handler(session, envelope(stale, phone))
        count = await session.execute(text("SELECT count(*) FROM messages WHERE external_id = :e"),
                                      {"e": f"otp:{stale.challenge_id}"})
        assert count.scalar() == 0  # an expired code is not worth an SMS


async def test_a_v1_otp_with_the_code_in_the_clear_is_still_sent_and_a_code_no_key_opens_is_dead():
    """v1 events written before codes were sealed still reach the phone; a sealed code that none
    of the worker's keys opens (tampered, or sealed under a key it lacks) goes to the DLQ."""
    handler = make_otp_handler(SETTINGS)
    phone = f"+1415555{uuid.uuid4().int % 10000:04d}"
    expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    old = OtpRequestedV1(challenge_id=str(uuid.uuid4()), phone=phone, code="271828", purpose="login", expires_at=expires)
    async with rollback_session(SETTINGS) as session:
        await handler(session, envelope(old, phone))
        body = (await session.execute(text("SELECT body FROM messages WHERE external_id = :e"),
                                      {"e": f"otp:{old.challenge_id}"})).scalar()
        assert body == "Your Switchboard code is 271828. It expires in 5 minutes."
        other_key = Fernet.generate_key().decode()
        assert other_key != LOCAL_SEAL_KEY
        foreign = OtpRequestedV2(challenge_id=str(uuid.uuid4()), phone=phone, sealed_code=seal([other_key], "141421"),
                                 purpose="login", expires_at=expires)
        with pytest.raises(DeadLetter, match="opens with none"):
            await handler(session, envelope(foreign, phone))
