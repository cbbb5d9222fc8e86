"""messaging.webhook.received.v1 -> parse the stored webhooks and apply them (worker, group
`messaging-webhooks`), a run of events in one call. Idempotent by the rows' `processed_at` on
top of the consumer's inbox."""

from __future__ import annotations

import uuid

from common.contracts import EventEnvelope
from common.contracts.messaging.v1 import WebhookReceivedV1
from common.messaging.consumer import EventConsumer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from messaging.inbound import service
from messaging.settings import MessagingSettings

GROUP = "messaging-webhooks"


def make_handlers(settings: MessagingSettings):
    providers = service.webhook_providers(settings)  # parsing only: no connection is opened

    async def on_webhooks_received(session: AsyncSession, events: list[EventEnvelope[WebhookReceivedV1]]) -> None:
        await service.process_webhooks(session, providers, [uuid.UUID(e.data.webhook_id) for e in events])

    return {"messaging.webhook.received.v1": on_webhooks_received}


def webhook_consumer(settings: MessagingSettings, sessions: async_sessionmaker[AsyncSession]) -> EventConsumer:
    """The worker's consumer of stored webhooks (its own group: a slow bulk of reports never
    holds back billing's answers or OTP requests)."""
    return EventConsumer(settings, sessions, GROUP, {}, batch_handlers=make_handlers(settings))
