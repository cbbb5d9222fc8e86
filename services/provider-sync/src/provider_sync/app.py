"""provider-sync API process: `uvicorn provider_sync.app:create_app --factory`."""

from fastapi import FastAPI

from common.app import create_service_app
from provider_sync.settings import ProviderSyncSettings


def create_app(settings: ProviderSyncSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ProviderSyncSettings(),
        title="Switchboard provider-sync",
        description="Provider catalogues, prices and health.",
    )
