"""messaging API process: `uvicorn messaging.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from messaging.contacts.endpoints import router as contacts_router
from messaging.inbound.endpoints import router as inbound_router
from messaging.settings import MessagingSettings


def create_app(settings: MessagingSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or MessagingSettings(),
        title="Switchboard messaging",
        description="Contacts, SMS/WhatsApp messages, conversations, templates, provider webhooks, number orders.",
        routers=[contacts_router, inbound_router],
    )
