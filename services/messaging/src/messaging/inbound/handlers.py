"""messaging.webhook.received.v1 -> parse the stored webhook and apply it (worker, group
`messaging-webhooks`). Idempotent by the row's `processed_at` on top of the consumer's inbox."""

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

    async def on_webhook_received(session: AsyncSession, event: EventEnvelope[WebhookReceivedV1]) -> None:
        await service.process_webhook(session, providers, uuid.UUID(event.data.webhook_id))

    return {"messaging.webhook.received.v1": on_webhook_received}


def webhook_consumer(settings: MessagingSettings, sessions: async_sessionmaker[AsyncSession]) -> EventConsumer:
    """The worker's consumer of stored webhooks (its own group: a slow bulk of reports never
    holds back billing's answers or OTP requests)."""
    return EventConsumer(settings, sessions, GROUP, make_handlers(settings))
