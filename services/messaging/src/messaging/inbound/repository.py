"""SQL of the inbound side: raw webhooks, the messages reports point at, inbound messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class StoredWebhook:
    id: uuid.UUID
    provider: str
    body: bytes
    headers: dict[str, Any]
    processed_at: datetime | None


@dataclass(frozen=True)
class OutboundRef:
    id: uuid.UUID
    provider: str | None
    provider_message_id: str | None
    status: str  # when it was read: it only moves forward (sms.status)


@dataclass(frozen=True)
class ExistingMessage:
    id: uuid.UUID
    conversation_id: uuid.UUID
    direction: str
    from_number: str
    to_number: str
    body: str


class InboundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- raw webhooks ------------------------------------------------------------------------------

    async def store_webhook(self, webhook_id: uuid.UUID, provider: str, body: bytes, headers: dict[str, str]) -> None:
        await self.session.execute(
            text(
                "INSERT INTO provider_webhooks (id, provider, body, headers) "
                "VALUES (:id, :provider, :body, CAST(:headers AS jsonb))"
            ),
            {"id": webhook_id, "provider": provider, "body": body, "headers": _json(headers)},
        )

    async def lock_webhooks(self, webhook_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredWebhook]:
        """The stored webhooks, locked (in id order, so two workers never deadlock on them)."""
        if not webhook_ids:
            return {}
        rows = await self.session.execute(
            text(
                "SELECT id, provider, body, headers, processed_at FROM provider_webhooks "
                "WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR UPDATE"
            ),
            {"ids": list(webhook_ids)},
        )
        return {r.id: StoredWebhook(r.id, r.provider, bytes(r.body), r.headers, r.processed_at) for r in rows}

    async def finish_webhooks(self, processed: Mapping[uuid.UUID, str], *, unprocessed: Mapping[uuid.UUID, str]) -> None:
        """Record each webhook's outcome; the `processed` ones are done, the `unprocessed` ones
        stay to be replayed."""
        ids = [*processed, *unprocessed]
        if not ids:
            return
        await self.session.execute(
            text(
                "UPDATE provider_webhooks w SET outcome = u.outcome, "
                "processed_at = CASE WHEN u.done THEN now() ELSE w.processed_at END "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:outcomes AS text[]), CAST(:done AS boolean[])) "
                "AS u(id, outcome, done) WHERE w.id = u.id"
            ),
            {
                "ids": ids,
                "outcomes": [o[:500] for o in [*processed.values(), *unprocessed.values()]],
                "done": [True] * len(processed) + [False] * len(unprocessed),
            },
        )

    # -- the outbound messages delivery reports point at --------------------------------------------

    async def outbound_by_ids(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, OutboundRef]:
        if not ids:
            return {}
        rows = await self.session.execute(
            text(
                "SELECT id, provider, provider_message_id, status FROM messages "
                "WHERE id = ANY(CAST(:ids AS uuid[])) AND direction = 'outbound'"
            ),
            {"ids": list(set(ids))},
        )
        return {r.id: OutboundRef(r.id, r.provider, r.provider_message_id, r.status) for r in rows}

    async def outbound_by_provider_ids(self, provider: str, provider_message_ids: Sequence[str]) -> dict[str, uuid.UUID]:
        if not provider_message_ids:
            return {}
        rows = await self.session.execute(
            text(
                "SELECT id, provider_message_id FROM messages WHERE provider = :provider "
                "AND provider_message_id = ANY(CAST(:pmids AS text[])) AND direction = 'outbound'"
            ),
            {"provider": provider, "pmids": list(set(provider_message_ids))},
        )
        return {r.provider_message_id: r.id for r in rows}

    # -- inbound messages ----------------------------------------------------------------------------

    async def owners(self, numbers: Sequence[str]) -> dict[str, uuid.UUID]:
        """Our number -> the tenant that owns it."""
        if not numbers:
            return {}
        rows = await self.session.execute(
            text("SELECT number, tenant_id FROM sms_numbers WHERE number = ANY(CAST(:n AS text[]))"),
            {"n": list(set(numbers))},
        )
        return {r.number: r.tenant_id for r in rows}

    async def existing_inbound(
        self,
        tenant_id: uuid.UUID,
        *,
        provider: str | None,
        provider_message_id: str | None,
        external_id: str | None,
    ) -> ExistingMessage | None:
        """The message these keys already name, if any."""
        columns = "id, conversation_id, direction, from_number, to_number, body"
        if provider and provider_message_id:
            sql, params = (
                f"SELECT {columns} FROM messages WHERE provider = :p AND provider_message_id = :k",
                {"p": provider, "k": provider_message_id},
            )
        elif external_id:
            sql, params = (
                f"SELECT {columns} FROM messages WHERE tenant_id = :t AND external_id = :k",
                {"t": tenant_id, "k": external_id},
            )
        else:
            return None
        row = (await self.session.execute(text(sql), params)).one_or_none()
        return ExistingMessage(*row) if row else None

    async def contact_id(self, tenant_id: uuid.UUID, phone: str) -> uuid.UUID | None:
        return await self.session.scalar(
            text("SELECT id FROM contacts WHERE tenant_id = :t AND phone = :p"), {"t": tenant_id, "p": phone}
        )

    async def insert_inbound(self, **values: Any) -> bool:
        """One inbound message; False when a unique key (provider id, the caller's id) already
        has one (a concurrent duplicate), in which case nothing was written."""
        inserted = await self.session.scalar(
            text(
                "INSERT INTO messages (id, tenant_id, conversation_id, channel, direction, from_number,"
                " to_number, body, encoding, segments, status, billing, contact_id, external_id, provider,"
                " provider_message_id, sent_at)"
                " VALUES (:id, :tenant_id, :conversation_id, 'sms', 'inbound', :from_number, :to_number, :body,"
                " :encoding, :segments, 'received', 'none', :contact_id, :external_id, :provider,"
                " :provider_message_id, :sent_at)"
                " ON CONFLICT DO NOTHING RETURNING id"
            ),
            values,
        )
        return inserted is not None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
