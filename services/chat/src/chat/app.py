"""chat API process: `uvicorn chat.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from chat.settings import ChatSettings


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ChatSettings(),
        title="Switchboard chat",
        description="Chats, groups, receipts, typing, presence, WebSocket, status updates.",
    )
