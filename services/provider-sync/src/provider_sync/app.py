"""provider-sync API process: `uvicorn provider_sync.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from provider_sync.settings import ProviderSyncSettings


def create_app(settings: ProviderSyncSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ProviderSyncSettings(),
        title="Switchboard provider-sync",
        description="Provider catalogues, prices and health.",
    )
