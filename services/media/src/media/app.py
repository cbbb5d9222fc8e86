"""media API process: `uvicorn media.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from media.settings import MediaSettings


def create_app(settings: MediaSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or MediaSettings(),
        title="Switchboard media",
        description="Uploads to S3 and media metadata.",
    )
