"""The SQL of a send. Plain statements over arrays, no ORM objects: a send to one recipient or to
10,000 is one statement (plus a look-up first when it names contacts by id)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The tenant's contacts named by id (a send naming contacts looks them up first: an unknown one
# refuses the send before anything is written).
_CONTACTS = text("SELECT id, phone FROM contacts WHERE tenant_id = :tenant AND id = ANY(CAST(:ids AS uuid[]))")

# The whole write of a send in one statement (one round trip for 1 or 10,000 recipients), one
# input row per distinct destination, in the caller's order:
# - `r`: each destination's contact (the one named, else the tenant's contact holding the
#   number) and whether it opted out of the tenant's messages;
# - `t`: the ones to send to: not opted out, and only if the tenant owns the sender (a custom
#   sender that is not theirs writes nothing; the caller refuses the send);
# - conversations opened or touched (sorted by number: the same row-lock order across
#   concurrent sends, so they cannot deadlock), messages inserted (a caller's id, seed 003
#   `uuid`, unique per tenant, makes the insert idempotent: a repeat inserts nothing), their
#   first history row and their outbox rows (common.messaging.outbox.outbox_rows, one per input
#   row, same order), both only for the messages actually inserted. The envelopes (~700 bytes
#   each) are unnested apart and joined by position: carried through `r` and `t` they made the
#   sorts of a 10,000-recipient send spill to disk.
# Answer: per input row, its contact, whether it opted out, whether its message was inserted;
# and whether the sender is owned.
_SEND = text(
    """
    WITH owner AS (
        SELECT CAST(:custom_sender AS text) IS NULL OR EXISTS (
            SELECT 1 FROM sms_numbers WHERE number = :custom_sender AND tenant_id = :tenant
        ) AS ok
    ),
    r AS (
        SELECT r.ord, r.id, r.conversation_id, r.dest,
               COALESCE(r.contact_id, (
                   SELECT c.id FROM contacts c WHERE c.tenant_id = :tenant AND c.phone = r.dest
               )) AS contact_id,
               EXISTS (
                   SELECT 1 FROM opt_outs o WHERE o.tenant_id = :tenant AND o.phone = r.dest
               ) AS opted_out
        FROM unnest(
            CAST(:ids AS uuid[]), CAST(:conversations AS uuid[]), CAST(:dests AS text[]),
            CAST(:contacts AS uuid[])
        ) WITH ORDINALITY AS r(id, conversation_id, dest, contact_id, ord)
    ),
    t AS (
        SELECT * FROM r WHERE NOT r.opted_out AND (SELECT ok FROM owner)
    ),
    conv AS (
        INSERT INTO conversations (id, tenant_id, channel, our_number, peer_number)
        SELECT t.conversation_id, :tenant, 'sms', :sender, t.dest FROM t
        ORDER BY t.dest
        ON CONFLICT (tenant_id, channel, our_number, peer_number)
        DO UPDATE SET last_message_at = now()
        RETURNING id, peer_number
    ),
    msg AS (
        INSERT INTO messages (
            id, tenant_id, conversation_id, direction, from_number, to_number, body, encoding,
            segments, status, route, contact_id, batch_id, external_id, billing
        )
        SELECT t.id, :tenant, conv.id, 'outbound', :sender, t.dest, :body, :encoding,
               :segments, 'queued', :route, t.contact_id, :batch, :external_id, 'pending'
        FROM t JOIN conv ON conv.peer_number = t.dest
        ORDER BY t.ord
        ON CONFLICT (tenant_id, external_id) WHERE external_id IS NOT NULL DO NOTHING
        RETURNING id
    ),
    history AS (
        INSERT INTO message_status_history (message_id, status, detail)
        SELECT t.id, 'queued', NULL FROM t JOIN msg ON msg.id = t.id ORDER BY t.ord
    ),
    events AS (
        INSERT INTO outbox (event_id, event_type, topic, key, envelope)
        SELECT e.event_id, e.event_type, e.topic, e.key, CAST(e.env AS jsonb)
        FROM unnest(
            CAST(:event_ids AS text[]), CAST(:event_types AS text[]), CAST(:topics AS text[]),
            CAST(:keys AS text[]), CAST(:envelopes AS text[])
        ) WITH ORDINALITY AS e(event_id, event_type, topic, key, env, ord)
        JOIN t ON t.ord = e.ord JOIN msg ON msg.id = t.id
        ORDER BY e.ord
    )
    SELECT r.ord, r.contact_id, r.opted_out, msg.id IS NOT NULL AS inserted, (SELECT ok FROM owner) AS owned
    FROM r LEFT JOIN msg ON msg.id = r.id
    ORDER BY r.ord
    """
)

# A big send's plan costs past the JIT thresholds, and compiling this many expressions takes
# 0.5-1 s, several times what it could save: off for this transaction (its only statement left).
_NO_JIT = text("SET LOCAL jit = off")
JIT_OFF_FROM = 100  # destinations

_BY_EXTERNAL_ID = text(
    """
    SELECT id, direction, from_number, to_number, body, encoding, segments, status, contact_id, batch_id
    FROM messages WHERE tenant_id = :tenant AND external_id = :external_id
    """
)


@dataclass(frozen=True)
class NewMessages:
    """One send's messages, one per distinct destination, in the caller's order."""

    tenant_id: uuid.UUID
    batch_id: uuid.UUID
    sender: str  # the number they go out from
    custom_sender: str | None  # the caller's own number (must be the tenant's), None: the platform's
    body: str
    encoding: str
    segments: int
    route: str
    ids: Sequence[uuid.UUID]
    conversations: Sequence[uuid.UUID]  # ids for the conversations that do not exist yet
    dests: Sequence[str]  # distinct
    contacts: Sequence[uuid.UUID | None]  # the contact named, None: the one holding the number, if any
    events: Sequence[dict[str, Any]]  # the outbox rows of the messages (outbox_rows), same order
    external_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """Per destination (same order): its contact, whether it opted out, whether its message was
    inserted; and whether the tenant owns the sender (when not, nothing was written)."""

    contacts: list[uuid.UUID | None]
    opted_out: list[bool]
    inserted: list[bool]
    sender_owned: bool


class SendRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def contacts(self, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Contact id -> phone, for the tenant's contacts among `ids`."""
        rows = await self.session.execute(_CONTACTS, {"tenant": tenant_id, "ids": list(ids)})
        return {contact_id: phone for contact_id, phone in rows}

    async def send(self, new: NewMessages) -> Outcome:
        """Store the messages with their conversations, first history rows and events (see _SEND)."""
        events = new.events
        if len(new.dests) >= JIT_OFF_FROM:
            await self.session.execute(_NO_JIT)
        result = await self.session.execute(
            _SEND,
            {
                "tenant": new.tenant_id,
                "sender": new.sender,
                "custom_sender": new.custom_sender,
                "body": new.body,
                "encoding": new.encoding,
                "segments": new.segments,
                "route": new.route,
                "batch": new.batch_id,
                "external_id": new.external_id,
                "ids": list(new.ids),
                "conversations": list(new.conversations),
                "dests": list(new.dests),
                "contacts": list(new.contacts),
                "event_ids": [e["id"] for e in events],
                "event_types": [e["type"] for e in events],
                "topics": [e["topic"] for e in events],
                "keys": [e["key"] for e in events],
                "envelopes": [e["env"] for e in events],
            },
        )
        rows = result.all()
        return Outcome(
            contacts=[row.contact_id for row in rows],
            opted_out=[row.opted_out for row in rows],
            inserted=[row.inserted for row in rows],
            sender_owned=bool(rows[0].owned) if rows else True,
        )

    async def by_external_id(self, tenant_id: uuid.UUID, external_id: str) -> Any | None:
        return (await self.session.execute(_BY_EXTERNAL_ID, {"tenant": tenant_id, "external_id": external_id})).first()
