"""Engine and session factory per service."""

from __future__ import annotations

import time
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.util import await_only

from common.settings import BaseServiceSettings

# A connection given back to the pool less than this long ago, whose socket is still open, is
# handed out again without a ping: it answered a moment ago, and a server that closed it since
# (a restart, `pg_terminate_backend`) has closed its socket, which asyncpg notices at once.
RECENT_S = 1.0
# When each pooled asyncpg connection was last given back (weak: a closed one just drops out).
_returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _ping_asyncpg(dbapi_connection: Any) -> bool:
    """The pool's pre-ping: no round trip for a connection given back within `RECENT_S` whose
    socket is open (under load, nearly every checkout: one round trip fewer per request), else
    one round trip.

    SQLAlchemy's asyncpg ping wraps its `;` in BEGIN ... ROLLBACK (for pgbouncer in transaction
    mode, which we do not use): three round trips before every request's first statement. A
    failure is translated exactly as the dialect's own ping does, so a dead connection (after
    a PostgreSQL restart) still reads as a disconnect: the pool drops every connection older
    than it and reconnects, and the request goes on with a fresh connection."""
    driver = dbapi_connection.driver_connection
    returned = _returned_at.pop(driver, None)
    if returned is not None and time.monotonic() - returned < RECENT_S and not driver.is_closed():
        return True
    try:
        await_only(driver.fetchrow(";"))
    except Exception as error:  # noqa: BLE001 - translated (and raised) as the dialect does
        dbapi_connection._handle_exception(error)
    return True


def _returned(dbapi_connection: Any, _record: Any) -> None:
    if dbapi_connection is not None:  # None: invalidated on the way back
        _returned_at[dbapi_connection.driver_connection] = time.monotonic()


# For connections whose statements take arrays of any size, one row to thousands (the workers'
# consumers and handlers, the SMS send writer): PostgreSQL switches a prepared statement to a
# generic plan after five runs, and a generic plan guesses the size of `unnest(:array)`; planned
# for a handful of rows, a big run is slow. Measured: 5,000 delivery reports applied in 7.4 s
# instead of 2.0 s; 5,000 recipients accepted in 12 s instead of 0.5 s. Custom plans cost a
# re-plan per run, which batching makes rare. JIT pays off only for long analytic queries and
# costs ~100 ms when it fires.
BATCH_SERVER_SETTINGS = {"jit": "off", "plan_cache_mode": "force_custom_plan"}


def create_engine(
    settings: BaseServiceSettings,
    *,
    pool_size: int | None = None,
    server_settings: dict[str, str] | None = None,
    **kwargs,
) -> AsyncEngine:
    """An async engine whose connections resolve unqualified names in the service's schema.
    `pool_size` (default: settings.db_pool_size, with as many again of overflow) and
    `server_settings` (more session settings, e.g. another `application_name`) are for a
    component that holds its own connections."""
    size = settings.db_pool_size if pool_size is None else pool_size
    engine = _create_async_engine(
        settings.database_url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {
                "search_path": settings.db_schema,
                "application_name": settings.service_name,
                **(server_settings or {}),
            }
        },
        **kwargs,
    )
    if engine.dialect.driver == "asyncpg":
        engine.dialect.do_ping = _ping_asyncpg  # type: ignore[method-assign]
        event.listen(engine.sync_engine.pool, "checkin", _returned)
    return engine


def session_info(settings: BaseServiceSettings) -> dict[str, str]:
    """What every session of the service carries: `source` is read by the outbox to fill the
    CloudEvents `source` attribute."""
    return {"source": f"/switchboard/{settings.service_name}"}


def create_session_factory(
    engine: AsyncEngine, settings: BaseServiceSettings
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, info=session_info(settings))
