"""Sending SMS: the API side of the send saga.

A send stores one `messages` row per recipient (status `queued`, billing `pending`), its first
history row, opens or finds each conversation, and emits `messaging.sms.requested.v1` per
message, all in one statement (sms.repository): in the request's transaction, or in a batch
with other requests' sends (sms.coalesce) when the request has no Idempotency-Key. Billing
answers reserved or rejected; the worker dispatches. The API never calls a provider.

Refusals are 422s raised before anything is written (the request rolls back on any error, so
nothing is stored either way). Recipients that opted out, and repeats, are not errors: they are
answered as skipped.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from common.auth import Principal
from common.contracts.messaging.v1 import SmsRequestedV1
from common.errors import Unprocessable
from common.ids import uuid7
from common.messaging.outbox import outbox_rows
from common.phones import parse as parse_phone
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.settings import MessagingSettings
from messaging.sms.coalesce import SendCoalescer
from messaging.sms.repository import NewMessages, SendRepository
from messaging.sms.schemas import QueuedMessage, SendResult, Skipped
from messaging.sms.segments import InvalidSmsText, SegmentInfo, analyse

# The contract (SmsRequestedV1) and the messages table cap a text at 10 segments: 1,530 GSM-7
# characters, 670 UCS-2 units. Carriers drop longer concatenations anyway.
MAX_SEGMENTS = 10
MAX_LISTED = 1000  # bad recipients named in an error's details
ROUTE = "standard"
OPTED_OUT, DUPLICATE = "opted_out", "duplicate"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class TooManySegments(InvalidSmsText):
    code, message = "TOO_MANY_SEGMENTS", f"The message text needs more than {MAX_SEGMENTS} SMS segments"


class InvalidRecipients(Unprocessable):
    code, message = "INVALID_RECIPIENTS", "Some recipients are not valid phone numbers"


class UnknownContacts(Unprocessable):
    code, message = "UNKNOWN_CONTACTS", "Some recipients are not contacts of your tenant"


class SenderNotOwned(Unprocessable):
    code, message = "SENDER_NOT_OWNED", "The sender is not one of your numbers"


class RecipientOptedOut(Unprocessable):
    code, message = "RECIPIENT_OPTED_OUT", "The recipient opted out of your messages"


class UuidReused(Unprocessable):
    code, message = "UUID_REUSED", "This uuid names a different message"


@dataclass(frozen=True)
class Sent:
    result: SendResult
    replayed: bool = False  # a repeat of a caller's id: nothing new was stored



def check_text(text: str) -> SegmentInfo:
    if not text.strip():
        raise InvalidSmsText("The message text is empty", code="EMPTY_MESSAGE")
    info = analyse(text)
    if info.segments > MAX_SEGMENTS:
        raise TooManySegments(
            details={"segments": info.segments, "max": MAX_SEGMENTS, "encoding": info.encoding}
        )
    return info


def _listed(items: list[str]) -> dict[str, Any]:
    return {"count": len(items), "listed": items[:MAX_LISTED]}


def _sender(settings: MessagingSettings, sender: str | None) -> str | None:
    """The custom sender in E.164 (None: the platform's default number)."""
    if sender is None:
        return None
    parsed = parse_phone(sender)
    if parsed is None:
        raise SenderNotOwned("The sender is not a valid phone number", details={"sender": sender})
    # The platform's shared number is everyone's default, so naming it is allowed.
    return None if parsed[0] == settings.sms_default_sender else parsed[0]


async def send(
    session: AsyncSession,
    settings: MessagingSettings,
    principal: Principal,
    *,
    text: str,
    recipients: list[str],
    sender: str | None = None,
    external_id: str | None = None,
    writer: SendCoalescer | None = None,
) -> Sent:
    """Queue `text` to every recipient (contact ids or phone numbers); see the module doc. With a
    `writer`, the messages are written in its batch (committed when this returns) rather than in
    `session`'s transaction."""
    tenant_id = principal.tenant_uuid
    info = check_text(text)
    if not recipients:
        raise Unprocessable("Name at least one recipient", code="NO_RECIPIENTS")
    if len(recipients) > settings.sms_max_recipients:
        raise Unprocessable(
            f"At most {settings.sms_max_recipients} recipients per send",
            code="TOO_MANY_RECIPIENTS",
            details={"count": len(recipients), "max": settings.sms_max_recipients},
        )
    custom_sender = _sender(settings, sender)

    # Classify: contact ids by shape, everything else must be a phone number.
    contact_ids: list[uuid.UUID] = []
    phones: dict[str, str] = {}  # as written -> E.164
    regions: dict[str, str] = {}  # E.164 -> country
    invalid: list[str] = []
    for raw in recipients:
        if _UUID.match(raw):
            contact_ids.append(uuid.UUID(raw))
        elif raw not in phones:
            parsed = parse_phone(raw)
            if parsed is None:
                invalid.append(raw)
            else:
                phones[raw] = parsed[0]
                regions[parsed[0]] = parsed[1]
    if invalid:
        raise InvalidRecipients(details=_listed(invalid))

    repo = SendRepository(session)
    if external_id is not None:
        existing = await repo.by_external_id(tenant_id, external_id)
        if existing is not None:
            return _replay(existing, custom_sender or settings.sms_default_sender, text, phones)

    named: dict[uuid.UUID, str] = {}
    if contact_ids:
        named = await repo.contacts(tenant_id, contact_ids)
        unknown = [str(c) for c in dict.fromkeys(contact_ids) if c not in named]
        if unknown:
            raise UnknownContacts(details=_listed(unknown))
    from_number = custom_sender or settings.sms_default_sender

    # In the order given; the first mention of a number wins, later ones are skipped.
    targets: dict[str, uuid.UUID | None] = {}
    duplicates: list[str] = []
    for raw in recipients:
        if _UUID.match(raw):
            cid: uuid.UUID | None = uuid.UUID(raw)
            phone = named[cid]  # type: ignore[index]
        else:
            phone = phones[raw]
            cid = None  # the contact holding the number, if any: found by the statement
        if phone in targets:
            duplicates.append(phone)
        else:
            targets[phone] = cid

    batch_id = uuid7()
    dests = list(targets)
    ids = [uuid7() for _ in dests]
    tenant = str(tenant_id)
    # Built for every destination (opted-out ones included: the statement decides, and inserts
    # only the rows of the messages it stores).
    events = outbox_rows(
        session,
        [
            (
                SmsRequestedV1(
                    message_id=str(mid), tenant_id=tenant, to=dest,
                    country=regions.get(dest) or _country(dest), segments=info.segments, route=ROUTE,
                ),
                str(mid),
            )
            for mid, dest in zip(ids, dests, strict=True)
        ],
        tenant_id=tenant,
    )
    new = NewMessages(
        tenant_id=tenant_id, batch_id=batch_id, sender=from_number, custom_sender=custom_sender, body=text,
        encoding=info.encoding, segments=info.segments, route=ROUTE, ids=ids,
        conversations=[uuid7() for _ in dests], dests=dests, contacts=[targets[d] for d in dests],
        events=events, external_id=external_id,
    )
    outcome = await (writer.write(new) if writer is not None else repo.send(new))
    if not outcome.sender_owned:
        raise SenderNotOwned(details={"sender": custom_sender})
    contact_of = dict(zip(dests, outcome.contacts, strict=True))
    queued: list[QueuedMessage] = []
    skipped: list[Skipped] = []
    clashed = False
    for mid, dest, out, inserted in zip(ids, dests, outcome.opted_out, outcome.inserted, strict=True):
        if out:
            skipped.append(Skipped(to=dest, reason=OPTED_OUT, contact_id=contact_of[dest]))
        elif inserted:
            queued.append(QueuedMessage(id=mid, to=dest, contact_id=contact_of[dest]))
        else:
            clashed = True
    if clashed:
        # Only a caller's id can clash: a concurrent request with the same uuid committed first.
        existing = await repo.by_external_id(tenant_id, external_id or "")
        if existing is None:
            raise RuntimeError("messages insert skipped rows without a caller's id clash")
        return _replay(existing, from_number, text, phones)
    skipped.extend(Skipped(to=phone, reason=DUPLICATE, contact_id=contact_of[phone]) for phone in duplicates)
    return Sent(
        SendResult(
            batch_id=batch_id, sender=from_number, encoding=info.encoding, segments=info.segments,
            messages=queued, skipped=skipped, count=len(queued),
        )
    )


def _country(e164: str) -> str:
    parsed = parse_phone(e164)
    return parsed[1] if parsed else "ZZ"


def _replay(existing: Any, from_number: str, text: str, phones: dict[str, str]) -> Sent:
    """The answer to a repeat of a caller's id: the first message, if the request is the same."""
    same = (
        existing.direction == "outbound"
        and existing.from_number == from_number
        and existing.body == text
        and existing.to_number in phones.values()
    )
    if not same:
        raise UuidReused()
    return Sent(
        SendResult(
            batch_id=existing.batch_id, sender=existing.from_number, encoding=existing.encoding, segments=existing.segments,
            messages=[QueuedMessage(id=existing.id, to=existing.to_number, status=existing.status,
                                    contact_id=existing.contact_id)],
            skipped=[], count=1,
        ),
        replayed=True,
    )


async def send_one(
    session: AsyncSession,
    settings: MessagingSettings,
    principal: Principal,
    *,
    to: str,
    text: str,
    sender: str | None = None,
    external_id: str | None = None,
    writer: SendCoalescer | None = None,
) -> Sent:
    """One recipient (seeds 002 and 003): an opted-out recipient is a refusal, not a skip."""
    sent = await send(
        session, settings, principal, text=text, recipients=[to], sender=sender, external_id=external_id,
        writer=writer,
    )
    if not sent.result.messages:
        raise RecipientOptedOut(details={"to": sent.result.skipped[0].to})
    return sent
