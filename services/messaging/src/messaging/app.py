"""messaging API process: `uvicorn messaging.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from messaging.contacts.endpoints import router as contacts_router
from messaging.inbound.endpoints import router as inbound_router
from messaging.messages.endpoints import router as messages_router
from messaging.numbers.endpoints import router as numbers_router
from messaging.settings import MessagingSettings
from messaging.sms.endpoints import router as sms_router
from messaging.sms.endpoints import seed_router as sms_seed_router


def create_app(settings: MessagingSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or MessagingSettings(),
        title="Switchboard messaging",
        description="Contacts, SMS/WhatsApp messages, conversations, templates, provider webhooks, number orders.",
        routers=[sms_router, sms_seed_router, numbers_router, messages_router, contacts_router, inbound_router],
    )
