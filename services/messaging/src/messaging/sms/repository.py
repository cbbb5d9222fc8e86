"""The SQL of a send. Plain statements over arrays, no ORM objects: a send to one recipient or to
10,000, or a batch of concurrent sends, is one statement (plus a look-up first when a send names
contacts by id)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.messaging.outbox import outbox_columns
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# The tenant's contacts named by id (a send naming contacts looks them up first: an unknown one
# refuses the send before anything is written).
_CONTACTS = text("SELECT id, phone FROM contacts WHERE tenant_id = :tenant AND id = ANY(CAST(:ids AS uuid[]))")

# The whole write of one or more sends in one statement (one round trip for 1 or 10,000
# recipients, and for one send or a batch of concurrent ones, see sms.coalesce). `q` is one row
# per send (its tenant, sender, text...), `r` one row per distinct destination of a send, in the
# callers' order, pointing at its send by `req`:
# - `r`: each destination's contact (the one named, else the tenant's contact holding the
#   number), whether it opted out of the tenant's messages, and whether the send's tenant owns
#   its sender;
# - `t`: the ones to send to: not opted out, and only if the tenant owns the sender (a custom
#   sender that is not theirs writes nothing for that send; its caller refuses it);
# - conversations opened or touched, once per (tenant, our number, peer) even when several sends
#   of the batch share one (ON CONFLICT DO UPDATE cannot touch a row twice), sorted: the same
#   row-lock order across concurrent statements, so they cannot deadlock; messages inserted (a
#   caller's id, seed 003 `uuid`, unique per tenant, makes the insert idempotent: a repeat
#   inserts nothing), their first history row and their outbox rows
#   (common.messaging.outbox.outbox_rows, one per `r` row, same order), both only for the
#   messages actually inserted. The envelopes (~700 bytes each) are unnested apart and joined by
#   position: carried through `r` and `t` they made the sorts of a 10,000-recipient send spill
#   to disk.
# Answer: per `r` row, its contact, whether it opted out, whether its message was inserted, and
# whether its send's sender is owned.
_SEND = text(
    """
    WITH q AS (
        SELECT q.ord, q.tenant, q.sender, q.body, q.encoding, q.segments, q.route, q.batch, q.external_id,
               q.custom_sender IS NULL OR EXISTS (
                   SELECT 1 FROM sms_numbers n WHERE n.number = q.custom_sender AND n.tenant_id = q.tenant
               ) AS owned
        FROM unnest(
            CAST(:q_tenants AS uuid[]), CAST(:q_senders AS text[]), CAST(:q_customs AS text[]),
            CAST(:q_bodies AS text[]), CAST(:q_encodings AS text[]), CAST(:q_segments AS int[]),
            CAST(:q_routes AS text[]), CAST(:q_batches AS uuid[]), CAST(:q_external_ids AS text[])
        ) WITH ORDINALITY AS q(tenant, sender, custom_sender, body, encoding, segments, route, batch, external_id, ord)
    ),
    r AS (
        SELECT r.ord, r.req, r.id, r.conversation_id, r.dest, q.tenant, q.sender, q.owned,
               COALESCE(r.contact_id, (
                   SELECT c.id FROM contacts c WHERE c.tenant_id = q.tenant AND c.phone = r.dest
               )) AS contact_id,
               EXISTS (
                   SELECT 1 FROM opt_outs o WHERE o.tenant_id = q.tenant AND o.phone = r.dest
               ) AS opted_out
        FROM unnest(
            CAST(:reqs AS int[]), CAST(:ids AS uuid[]), CAST(:conversations AS uuid[]),
            CAST(:dests AS text[]), CAST(:contacts AS uuid[])
        ) WITH ORDINALITY AS r(req, id, conversation_id, dest, contact_id, ord)
        JOIN q ON q.ord = r.req
    ),
    t AS (
        SELECT * FROM r WHERE NOT r.opted_out AND r.owned
    ),
    conv AS (
        INSERT INTO conversations (id, tenant_id, channel, our_number, peer_number)
        SELECT DISTINCT ON (t.tenant, t.sender, t.dest) t.conversation_id, t.tenant, 'sms', t.sender, t.dest
        FROM t
        ORDER BY t.tenant, t.sender, t.dest
        ON CONFLICT (tenant_id, channel, our_number, peer_number)
        DO UPDATE SET last_message_at = now()
        RETURNING id, tenant_id, our_number, peer_number
    ),
    msg AS (
        INSERT INTO messages (
            id, tenant_id, conversation_id, direction, from_number, to_number, body, encoding,
            segments, status, route, contact_id, batch_id, external_id, billing
        )
        SELECT t.id, t.tenant, conv.id, 'outbound', t.sender, t.dest, q.body, q.encoding,
               q.segments, 'queued', q.route, t.contact_id, q.batch, q.external_id, 'pending'
        FROM t
        JOIN q ON q.ord = t.req
        JOIN conv ON conv.tenant_id = t.tenant AND conv.our_number = t.sender AND conv.peer_number = t.dest
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
            CAST(:event_ids AS text[]), CAST(:event_types AS text[]), CAST(:event_topics AS text[]),
            CAST(:event_keys AS text[]), CAST(:event_envs AS text[])
        ) WITH ORDINALITY AS e(event_id, event_type, topic, key, env, ord)
        JOIN t ON t.ord = e.ord JOIN msg ON msg.id = t.id
        ORDER BY e.ord
    )
    SELECT r.ord, r.contact_id, r.opted_out, msg.id IS NOT NULL AS inserted, r.owned
    FROM r LEFT JOIN msg ON msg.id = r.id
    ORDER BY r.ord
    """
)

# For a big send, in its transaction (its only statement left):
# - JIT off: the plan costs past the JIT thresholds, and compiling this many expressions takes
#   0.5-1 s, several times what it could save;
# - custom plans only: a connection that ran the (prepared) statement for small sends may
#   switch to a generic plan, costed for arrays of a few rows, whose joins go quadratic on
#   thousands (measured: 12 s instead of 0.5 s for 5,000 destinations).
_BIG_SEND = text(
    "SELECT set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true)"
)
BIG_SEND_FROM = 100  # destinations

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
    def __init__(self, session: AsyncSession | AsyncConnection, *, tuned: bool = False) -> None:
        """`tuned`: the connection already runs with _BIG_SEND's settings (sms.coalesce's
        writers)."""
        self.session = session
        self.tuned = tuned

    async def contacts(self, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Contact id -> phone, for the tenant's contacts among `ids`."""
        rows = await self.session.execute(_CONTACTS, {"tenant": tenant_id, "ids": list(ids)})
        return {contact_id: phone for contact_id, phone in rows}

    async def send(self, new: NewMessages) -> Outcome:
        """Store one send's messages with their conversations, first history rows and events."""
        return (await self.send_many([new]))[0]

    async def send_many(self, sends: Sequence[NewMessages]) -> list[Outcome]:
        """Store several sends in one statement (see _SEND), one Outcome per send, same order."""
        reqs: list[int] = []
        for number, new in enumerate(sends, start=1):
            reqs.extend([number] * len(new.dests))
        if len(reqs) >= BIG_SEND_FROM and not self.tuned:
            await self.session.execute(_BIG_SEND)
        events = [e for new in sends for e in new.events]
        result = await self.session.execute(
            _SEND,
            {
                "q_tenants": [new.tenant_id for new in sends],
                "q_senders": [new.sender for new in sends],
                "q_customs": [new.custom_sender for new in sends],
                "q_bodies": [new.body for new in sends],
                "q_encodings": [new.encoding for new in sends],
                "q_segments": [new.segments for new in sends],
                "q_routes": [new.route for new in sends],
                "q_batches": [new.batch_id for new in sends],
                "q_external_ids": [new.external_id for new in sends],
                "reqs": reqs,
                "ids": [i for new in sends for i in new.ids],
                "conversations": [c for new in sends for c in new.conversations],
                "dests": [d for new in sends for d in new.dests],
                "contacts": [c for new in sends for c in new.contacts],
                **outbox_columns(events),
            },
        )
        rows = iter(result.all())
        outcomes = []
        for new in sends:
            mine = [next(rows) for _ in new.dests]
            outcomes.append(
                Outcome(
                    contacts=[row.contact_id for row in mine],
                    opted_out=[row.opted_out for row in mine],
                    inserted=[row.inserted for row in mine],
                    sender_owned=bool(mine[0].owned) if mine else True,
                )
            )
        return outcomes

    async def by_external_id(self, tenant_id: uuid.UUID, external_id: str) -> Any | None:
        return (await self.session.execute(_BY_EXTERNAL_ID, {"tenant": tenant_id, "external_id": external_id})).first()
