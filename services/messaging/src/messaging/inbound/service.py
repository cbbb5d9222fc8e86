"""Provider webhooks and received messages.

The API side only checks a webhook and stores it raw (`provider_webhooks`) with a
`messaging.webhook.received.v1` event, in one transaction; the worker (`handlers.py`) parses the
stored body and applies it: delivery reports move outbound statuses through `sms.status`
(reports for messages not known yet are parked there), inbound messages are stored in their
conversation. A received message, whether a provider reported it or a tenant posted it to seed
003's `/api/receive-sms`, goes through the one function `receive`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from common import errors as common_errors
from common.contracts.messaging.v1 import MessageReceivedV1, WebhookReceivedV1
from common.errors import NotFound, Unauthorized, Unprocessable
from common.ids import parse_uuid, uuid7
from common.messaging import emit
from common.phones import parse as parse_phone
from common.phones import to_e164
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.conversations.repository import ensure_conversations
from messaging.inbound.repository import InboundRepository
from messaging.inbound.schemas import ReceiveSmsCreate
from messaging.providers.base import DeliveryReport, InboundSms, InvalidDeliveryReport, SmsProvider
from messaging.providers.registry import build_provider
from messaging.settings import MessagingSettings
from messaging.sms import optout, segments
from messaging.sms import status as st
from messaging.sms.service import MAX_SEGMENTS, UuidReused

log = logging.getLogger("messaging.inbound")

MAX_WEBHOOK_BYTES = 1024 * 1024  # 1,000 reports of a few hundred bytes each fit with room to spare
# Kept with the raw body: enough to re-verify and to trace a request, nothing secret.
STORED_HEADERS = ("content-type", "content-length", "user-agent", "x-signature", "x-request-id", "x-forwarded-for")
MAX_BODY_CHARS = segments.MAX_CHARS
# Not even built for webhooks (SNS reports only to CloudWatch; its client is slow to make).
NEVER_CALLS_BACK = frozenset({"sns"})

WEBHOOKS = Counter(
    "sb_sms_webhooks_total",
    "SMS provider webhook requests, by result (stored, forged, too_large, unknown_provider)",
    ["provider", "result"],
)
WEBHOOK_ITEMS = Counter(
    "sb_sms_webhook_items_total",
    "Items of processed SMS webhooks, by outcome (moved, unchanged, parked, received, duplicate, "
    "unroutable, invalid)",
    ["provider", "outcome"],
)


class UnknownProvider(NotFound):
    code, message = "UNKNOWN_PROVIDER", "No SMS provider of that name sends webhooks here"


class InvalidSignature(Unauthorized):
    code, message = "INVALID_SIGNATURE", "Missing or invalid webhook signature"


class PayloadTooLarge(common_errors.PayloadTooLarge):
    message = "The webhook body is too large"


# -- the providers that call us ----------------------------------------------------------------------


def webhook_providers(settings: MessagingSettings) -> dict[str, SmsProvider]:
    """The providers whose webhooks we take: the ones `sms_routes` sends through that report back.
    A provider we do not route to gets a 404, so the local simulator's well-known secret opens
    nothing where the simulator is not routed (production refuses to route it)."""
    names = sorted({name for names in settings.sms_routes.values() for name in names} - NEVER_CALLS_BACK)
    built = {name: build_provider(name, settings) for name in names}
    return {name: p for name, p in built.items() if p.has_delivery_reports}


# -- API side: check, store raw, announce ------------------------------------------------------------


async def store_webhook(
    session: AsyncSession, provider: SmsProvider, url: str, headers: Mapping[str, str], body: bytes
) -> uuid.UUID:
    """Verify a webhook over its public `url` and raw body, store it and emit
    `messaging.webhook.received.v1` in the caller's transaction. Nothing is parsed here."""
    if not provider.verify_webhook(url, headers, body):
        WEBHOOKS.labels(provider.name, "forged").inc()
        raise InvalidSignature()
    webhook_id = uuid7()
    kept = {name: headers[name][:512] for name in STORED_HEADERS if headers.get(name)}
    await InboundRepository(session).store_webhook(webhook_id, provider.name, body, kept)
    await emit(session, WebhookReceivedV1(webhook_id=str(webhook_id), provider=provider.name), subject=str(webhook_id))
    WEBHOOKS.labels(provider.name, "stored").inc()
    return webhook_id


# -- worker side: apply a stored webhook -----------------------------------------------------------


async def process_webhooks(
    session: AsyncSession, providers: Mapping[str, SmsProvider], webhook_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str | None]:
    """Apply stored webhooks once each, together: their rows are locked in one statement (in id
    order), and the delivery reports of all of them go through one `status.apply` per provider,
    in the order the webhooks were given (so a `sent` before its `delivered` stays first). A
    bulk send's reports arrive as dozens of webhooks at once; applied one by one they took a
    transaction's worth of statements each. Returns each webhook's outcome, None when there was
    nothing to do (unknown or already processed)."""
    repo = InboundRepository(session)
    order = list(dict.fromkeys(webhook_ids))
    stored = await repo.lock_webhooks(order)
    outcomes: dict[uuid.UUID, str | None] = dict.fromkeys(order)
    reports: dict[str, list[tuple[DeliveryReport, uuid.UUID]]] = {}
    inbound: list[tuple[uuid.UUID, str, Sequence[InboundSms]]] = []
    parts: dict[uuid.UUID, list[str]] = {}
    kept: set[uuid.UUID] = set()  # not processed: to be replayed
    for webhook_id in order:
        webhook = stored.get(webhook_id)
        if webhook is None:
            log.warning("webhook event for a row that does not exist", extra={"webhook_id": str(webhook_id)})
            continue
        if webhook.processed_at is not None:
            continue
        provider = providers.get(webhook.provider)
        if provider is None:
            # Configuration changed since it was stored: keep it unprocessed, to be replayed.
            outcomes[webhook_id] = f"not processed: provider {webhook.provider} is not configured"
            kept.add(webhook_id)
            continue
        try:
            found, received = provider.parse_webhook(webhook.body, webhook.headers)
        except InvalidDeliveryReport as exc:
            # Signed by the provider but unreadable: a retry would carry the same bytes, so the
            # request was answered 200 and the raw row is the record (and the input of a replay
            # once the parser learns the new shape).
            WEBHOOK_ITEMS.labels(webhook.provider, "invalid").inc()
            log.warning("unreadable webhook", extra={"webhook_id": str(webhook_id), "provider": webhook.provider, "error": str(exc)})
            outcomes[webhook_id] = f"invalid: {exc}"
            continue
        parts[webhook_id] = []
        if found:
            reports.setdefault(webhook.provider, []).extend((r, webhook_id) for r in found)
        if received:
            inbound.append((webhook_id, webhook.provider, received))
    for provider_name, items in reports.items():
        for webhook_id, phrase in (await apply_reports(session, provider_name, items)).items():
            parts[webhook_id].append(phrase)
    for webhook_id, provider_name, received in inbound:
        parts[webhook_id].extend(await receive_from_provider(session, provider_name, received))
    for webhook_id, phrases in parts.items():
        outcomes[webhook_id] = "; ".join(phrases) or "empty"
    finished = {w: o for w, o in outcomes.items() if o is not None}
    await repo.finish_webhooks(
        {w: o for w, o in finished.items() if w not in kept},
        unprocessed={w: o for w, o in finished.items() if w in kept},
    )
    return outcomes


async def apply_reports(
    session: AsyncSession, provider: str, items: Sequence[tuple[DeliveryReport, uuid.UUID | None]]
) -> dict[uuid.UUID | None, str]:
    """Move the statuses the reports name (each with its webhook's id), in one `status.apply`;
    park the ones whose message is not known yet. The message is the outbound one named by
    `clientRef` (our id), else the one with this provider's id; a `clientRef` that is not one of
    our outbound ids is ignored. The outcome phrase per webhook."""
    repo = InboundRepository(session)
    refs = {r.client_ref: ref for r, _ in items if (ref := parse_uuid(r.client_ref)) is not None}
    by_ref = await repo.outbound_by_ids(list(refs.values()))
    by_pmid = await repo.outbound_by_provider_ids(provider, [r.provider_message_id for r, _ in items])
    changes: list[st.Change] = []
    owners: list[uuid.UUID | None] = []  # the webhook of each change
    claimed: dict[str, uuid.UUID] = dict((pmid, mid) for pmid, mid in by_pmid.items())
    tally: dict[uuid.UUID | None, list[int]] = {}  # webhook -> [reports, moved, unchanged, parked]
    parked: list[st.Parked] = []
    settled = 0  # reports that could not move their message (see below)
    for report, webhook_id in items:
        counts = tally.setdefault(webhook_id, [0, 0, 0, 0])
        counts[0] += 1
        pmid = report.provider_message_id
        ref = refs.get(report.client_ref) if report.client_ref else None
        message = by_ref.get(ref) if ref else None
        if message is not None:
            target = message.id
            # Record the provider id only when it is news and names no other message: the
            # dispatcher's record (after a failover, say) is not overwritten, and a provider that
            # echoes a wrong clientRef cannot trip the unique index and block the whole webhook.
            record = message.provider_message_id is None and claimed.get(pmid, target) == target
            if record:
                claimed[pmid] = target
            elif not st.moves(message.status, str(report.status)):
                # Nothing to record and no status to move (a status only moves forward, so what
                # was read stays true): the provider's `sent` for a message the dispatcher
                # already recorded as sent, a duplicate, a late report. A third of a bulk
                # send's reports; they skip the status statement and its row locks.
                counts[2] += 1
                settled += 1
                continue
        elif pmid in by_pmid:
            target, record = by_pmid[pmid], True
        else:
            parked.append(st.Parked(pmid, str(report.status), report.error, webhook_id))
            counts[3] += 1
            continue
        changes.append(
            st.Change(
                target,
                str(report.status),
                detail=f"delivery report from {provider}",
                provider=provider if record else None,
                provider_message_id=pmid if record else None,
                error=report.error,
            )
        )
        owners.append(webhook_id)
    await st.park_reports(session, provider, parked)
    moved = await st.apply(session, changes) if changes else []
    # Each move is credited to the first webhook whose report asked for it.
    moves = {(m.message_id, m.status) for m in moved}
    for change, webhook_id in zip(changes, owners, strict=True):
        key = (change.message_id, change.status)
        if key in moves:
            moves.discard(key)
            tally[webhook_id][1] += 1
        else:
            tally[webhook_id][2] += 1
    WEBHOOK_ITEMS.labels(provider, "moved").inc(len(moved))
    WEBHOOK_ITEMS.labels(provider, "unchanged").inc(len(changes) - len(moved) + settled)
    WEBHOOK_ITEMS.labels(provider, "parked").inc(sum(c[3] for c in tally.values()))
    return {
        webhook_id: f"reports: {n} ({m} moved, {u} unchanged, {p} parked)"
        for webhook_id, (n, m, u, p) in tally.items()
    }


async def receive_from_provider(session: AsyncSession, provider: str, inbound: Sequence[InboundSms]) -> list[str]:
    """Store the inbound messages of one webhook; one outcome phrase per message."""
    repo = InboundRepository(session)
    ours = {sms.to_number: _e164_or_none(sms.to_number) for sms in inbound}
    owners = await repo.owners([n for n in ours.values() if n])
    outcomes: list[str] = []
    for sms in inbound:
        to = ours[sms.to_number]
        tenant_id = owners.get(to) if to else None
        if tenant_id is None:
            # Not an error and not lost: the raw row keeps it (a number bought but not yet
            # registered, a provider misrouting); it can be replayed once the number has an owner.
            WEBHOOK_ITEMS.labels(provider, "unroutable").inc()
            outcomes.append(f"unroutable: no tenant owns {to or sms.to_number}")
            continue
        sender = _sender(sms.from_number)
        if sender is None:
            WEBHOOK_ITEMS.labels(provider, "invalid").inc()
            outcomes.append(f"invalid: inbound {sms.provider_message_id} has an unusable from {sms.from_number[:32]!r}")
            continue
        received = await receive(
            session,
            tenant_id=tenant_id,
            from_number=sender,
            to_number=to,  # type: ignore[arg-type]  (an owner was found, so it parsed)
            text=sms.text,
            sent_at=sms.received_at,
            provider=provider,
            provider_message_id=sms.provider_message_id,
        )
        WEBHOOK_ITEMS.labels(provider, "received" if received.created else "duplicate").inc()
        outcomes.append(f"{'received' if received.created else 'duplicate'} {received.message_id}")
    return outcomes


# -- one received message, from a provider or from the API ---------------------------------------


@dataclass(frozen=True)
class Received:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    created: bool  # False: these keys already named a message, nothing was written
    keyword: str | None = None  # "stop" / "start" when the text was one


async def receive(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    from_number: str,
    to_number: str,
    text: str,
    sent_at: datetime | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
    external_id: str | None = None,
    strict: bool = False,
) -> Received:
    """Store one inbound SMS of a tenant in the conversation (our number `to_number`, peer
    `from_number`), with its `received` history row and `messaging.message.received.v1`, and
    apply an opt-out keyword. Idempotent by (provider, provider id) or (tenant, external id).

    `strict` (the API): a text that cannot be an SMS is a 422. Otherwise (a provider already
    delivered it) it is kept as well as it fits: cut to 1,600 characters, NULs and lone
    surrogates replaced."""
    repo = InboundRepository(session)
    keys = {"provider": provider, "provider_message_id": provider_message_id, "external_id": external_id}
    existing = await repo.existing_inbound(tenant_id, **keys)
    if existing is not None:
        if external_id and (existing.direction, existing.from_number, existing.to_number, existing.body) != (
            "inbound", from_number, to_number, text
        ):
            # As on the send side: the caller's id names one message, not whatever comes next.
            raise UuidReused(details={"uuid": external_id})
        return Received(existing.id, existing.conversation_id, created=False)
    body, encoding, parts, note = _fit(text, strict=strict)
    conversation_id = (await ensure_conversations(session, tenant_id, [(to_number, from_number)]))[
        (to_number, from_number)
    ]
    message_id = uuid7()
    inserted = await repo.insert_inbound(
        id=message_id,
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        from_number=from_number,
        to_number=to_number,
        body=body,
        encoding=encoding,
        segments=parts,
        contact_id=await repo.contact_id(tenant_id, from_number),
        sent_at=_not_future(sent_at),
        **keys,
    )
    if not inserted:  # a concurrent copy won the unique key
        existing = await repo.existing_inbound(tenant_id, **keys)
        if existing is None:
            raise RuntimeError("an inbound message conflicted with a key that names no message")
        return Received(existing.id, existing.conversation_id, created=False)
    detail = f"received from {provider}" if provider else "received through the API"
    await st.record_created(session, [message_id], st.RECEIVED, f"{detail}{note}")
    await emit(
        session,
        MessageReceivedV1(
            message_id=str(message_id),
            tenant_id=str(tenant_id),
            conversation_id=str(conversation_id),
            channel="sms",
            from_number=from_number,
            to_number=to_number,
        ),
        # Keyed by conversation: one conversation's messages stay in order for their readers.
        subject=str(conversation_id),
        tenant_id=str(tenant_id),
    )
    keyword = await optout.apply_keyword(session, tenant_id, from_number, body)
    return Received(message_id, conversation_id, created=True, keyword=keyword)


async def receive_from_api(session: AsyncSession, tenant_id: uuid.UUID, data: ReceiveSmsCreate) -> Received:
    """Seed 003 `/api/receive-sms`: the caller's tenant received `messageText` on `receiverPhone`."""
    return await receive(
        session,
        tenant_id=tenant_id,
        from_number=_phone(data.sender_phone, "senderPhone"),
        to_number=_phone(data.receiver_phone, "receiverPhone"),
        text=data.message_text,
        sent_at=datetime.fromtimestamp(data.timestamp, UTC) if data.timestamp is not None else None,
        external_id=data.uuid,
        strict=True,
    )


# -- helpers ---------------------------------------------------------------------------------------


def _fit(text: str, *, strict: bool) -> tuple[str, str, int, str]:
    """(body, encoding, segments, a note for the history) of a received text. The segment count
    is capped at the table's limit: an inbound message is not billed, so it is a count only."""
    if strict:
        info = segments.analyse(text)  # 422 EMPTY_MESSAGE, MESSAGE_TOO_LONG, INVALID_SMS_TEXT
        return text, info.encoding, min(info.segments, MAX_SEGMENTS), ""
    # PostgreSQL text holds neither NUL nor a lone surrogate; a carrier may still send them.
    clean = text.replace("\x00", "\ufffd").encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    note = ""
    if len(clean) > MAX_BODY_CHARS:
        note = f" (text cut to {MAX_BODY_CHARS} of {len(clean)} characters)"
        clean = clean[:MAX_BODY_CHARS]
    if not clean:
        return "", segments.GSM7, 1, " (empty text)"
    info = segments.analyse(clean)
    return clean, info.encoding, min(info.segments, MAX_SEGMENTS), note


def _e164_or_none(raw: str) -> str | None:
    parsed = parse_phone(raw)
    return parsed[0] if parsed else None


def _sender(raw: str) -> str | None:
    """The peer of an inbound message: E.164 when it is a phone number, else (a short code, an
    alphanumeric sender) as written, if it fits the column."""
    e164 = _e164_or_none(raw)
    if e164:
        return e164
    kept = raw.strip()
    return kept if 0 < len(kept) <= 20 and kept.isprintable() else None


def _phone(raw: str, field: str) -> str:
    """E.164 from a number written with its country code (`+14155552671`, also `14155552671`)."""
    candidate = raw.strip()
    if candidate.isdigit():
        candidate = f"+{candidate}"
    try:
        return to_e164(candidate)
    except Unprocessable as exc:
        raise Unprocessable(
            f"{field} is not a valid phone number with its country code", code="INVALID_PHONE",
            details={"field": field},
        ) from exc


def _not_future(at: datetime | None) -> datetime | None:
    """The sender's clock is not ours to trust into the future."""
    if at is None:
        return None
    now = datetime.now(UTC)
    return min(at, now)
