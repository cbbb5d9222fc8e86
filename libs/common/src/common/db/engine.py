"""Engine and session factory per service."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from common.settings import BaseServiceSettings


def create_engine(settings: BaseServiceSettings, **kwargs) -> AsyncEngine:
    """An async engine whose connections resolve unqualified names in the service's schema."""
    return _create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {
                "search_path": settings.db_schema,
                "application_name": settings.service_name,
            }
        },
        **kwargs,
    )


def create_session_factory(
    engine: AsyncEngine, settings: BaseServiceSettings
) -> async_sessionmaker[AsyncSession]:
    # `source` is read by the outbox to fill the CloudEvents `source` attribute.
    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        info={"source": f"/switchboard/{settings.service_name}"},
    )
