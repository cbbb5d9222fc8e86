"""Writing events: the state change and the outbox row commit in one transaction."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import MetaData, insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.context import request_id_var
from common.contracts.envelope import EventEnvelope, topic_for
from common.contracts.registry import type_of
from common.messaging.tables import add_backbone_tables
from common.observability.tracing import current_traceparent

# Unqualified tables: each service's connections have search_path = its own schema.
_outbox, _inbox = add_backbone_tables(MetaData())
outbox_table = _outbox
inbox_table = _inbox


async def emit(
    session: AsyncSession,
    payload: BaseModel,
    *,
    subject: str,
    tenant_id: str | None = None,
) -> EventEnvelope:
    """Add an event to the outbox inside the caller's transaction; the relay publishes it later."""
    event_type = type_of(payload)
    envelope = EventEnvelope(
        source=session.info.get("source", "/switchboard/unknown"),
        type=event_type,
        subject=subject,
        tenantid=tenant_id,
        traceparent=current_traceparent(),
        requestid=request_id_var.get(),
        data=payload,
    )
    await session.execute(
        insert(outbox_table).values(
            event_id=envelope.id,
            event_type=event_type,
            topic=topic_for(event_type),
            key=subject,
            envelope=envelope.model_dump(mode="json", by_alias=True),
        )
    )
    return envelope
