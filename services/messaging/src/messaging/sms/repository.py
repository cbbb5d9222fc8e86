"""The SQL of a send. Plain statements over arrays, no ORM objects: a send to 10,000 recipients
is one statement per table, and a send to one costs the same few round trips."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The tenant's contacts named by id, or holding one of the phone numbers (so a number typed as
# a phone is linked to its contact too), and whether the tenant owns the sender: one round trip.
_RESOLVE = text(
    """
    SELECT 'contact' AS kind, id, phone FROM contacts
    WHERE tenant_id = :tenant
      AND (id = ANY(CAST(:ids AS uuid[])) OR phone = ANY(CAST(:phones AS text[])))
    UNION ALL
    SELECT 'sender', NULL, number FROM sms_numbers WHERE number = :sender AND tenant_id = :tenant
    """
)

# One row per recipient. A caller's id (seed 003 `uuid`, unique per tenant) makes the insert
# idempotent: a repeat inserts nothing and RETURNING tells.
_INSERT = text(
    """
    INSERT INTO messages (
        id, tenant_id, conversation_id, direction, from_number, to_number, body, encoding,
        segments, status, route, contact_id, batch_id, external_id, billing
    )
    SELECT r.id, :tenant, r.conversation_id, 'outbound', :sender, r.dest, :body, :encoding,
           :segments, 'queued', :route, r.contact_id, :batch, :external_id, 'pending'
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:conversations AS uuid[]), CAST(:dests AS text[]), CAST(:contacts AS uuid[])
    ) AS r(id, conversation_id, dest, contact_id)
    ON CONFLICT (tenant_id, external_id) WHERE external_id IS NOT NULL DO NOTHING
    RETURNING id
    """
)

_BY_EXTERNAL_ID = text(
    """
    SELECT id, direction, from_number, to_number, body, encoding, segments, status, contact_id, batch_id
    FROM messages WHERE tenant_id = :tenant AND external_id = :external_id
    """
)


@dataclass(frozen=True)
class Resolved:
    contacts: dict[uuid.UUID, str]  # contact id -> phone, for the ids and the phones asked
    sender_owned: bool


@dataclass(frozen=True)
class NewMessages:
    tenant_id: uuid.UUID
    batch_id: uuid.UUID
    sender: str
    body: str
    encoding: str
    segments: int
    route: str
    ids: Sequence[uuid.UUID]
    conversations: Sequence[uuid.UUID]
    dests: Sequence[str]
    contacts: Sequence[uuid.UUID | None]
    external_id: str | None = None


class SendRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def resolve(
        self, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID], phones: Sequence[str], sender: str | None
    ) -> Resolved:
        rows = await self.session.execute(
            _RESOLVE, {"tenant": tenant_id, "ids": list(ids), "phones": list(phones), "sender": sender}
        )
        contacts: dict[uuid.UUID, str] = {}
        owned = False
        for kind, contact_id, phone in rows:
            if kind == "contact":
                contacts[contact_id] = phone
            else:
                owned = True
        return Resolved(contacts, owned)

    async def insert(self, new: NewMessages) -> set[uuid.UUID]:
        """Insert the messages; the ids inserted (none when the caller's id was used before)."""
        result = await self.session.execute(
            _INSERT,
            {
                "tenant": new.tenant_id,
                "sender": new.sender,
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
            },
        )
        return {row[0] for row in result}

    async def by_external_id(self, tenant_id: uuid.UUID, external_id: str) -> Any | None:
        return (await self.session.execute(_BY_EXTERNAL_ID, {"tenant": tenant_id, "external_id": external_id})).first()

