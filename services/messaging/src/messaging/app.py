"""messaging API process: `uvicorn messaging.app:create_app --factory`."""

from contextlib import AsyncExitStack

from common.app import create_service_app
from common.db import create_engine
from fastapi import FastAPI

from messaging.contacts.endpoints import router as contacts_router
from messaging.inbound.endpoints import router as inbound_router
from messaging.inbound.service import webhook_providers
from messaging.messages.endpoints import router as messages_router
from messaging.numbers.endpoints import router as numbers_router
from messaging.settings import MessagingSettings
from messaging.sms.coalesce import WRITER_SERVER_SETTINGS, SendCoalescer
from messaging.sms.endpoints import router as sms_router
from messaging.sms.endpoints import seed_router as sms_seed_router


async def _startup(app: FastAPI) -> AsyncExitStack:
    """The providers whose webhooks the API verifies, built once and closed at shutdown; the
    coalescer that writes concurrent sends together, stopped (after writing what waits) at
    shutdown."""
    settings: MessagingSettings = app.state.settings
    providers = app.state.sms_webhook_providers = webhook_providers(settings)
    closing = AsyncExitStack()
    for provider in providers.values():
        closing.push_async_callback(provider.aclose)
    if settings.sms_coalesce_writers > 0:
        writers = settings.sms_coalesce_writers
        engine = create_engine(settings, pool_size=writers, server_settings=WRITER_SERVER_SETTINGS)
        closing.push_async_callback(engine.dispose)
        coalescer = app.state.send_coalescer = SendCoalescer(engine, writers=writers)
        await coalescer.start()
        closing.push_async_callback(coalescer.stop)
    return closing


def create_app(settings: MessagingSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or MessagingSettings(),
        title="Switchboard messaging",
        description="Contacts, SMS/WhatsApp messages, conversations, templates, provider webhooks, number orders.",
        routers=[sms_router, sms_seed_router, numbers_router, messages_router, contacts_router, inbound_router],
        on_startup=[_startup],
    )
