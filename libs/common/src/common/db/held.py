"""A connection held across transactions, for a component on the hot path of every event or
request it writes (a consumer, the send coalescer): one pool checkout, and its pre-ping round
trip, when it starts rather than one per transaction."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)


class HeldConnection:
    """`get()` the connection (taken from `engine` on first use, and again after `release` or
    `discard`, or when it was closed or invalidated meanwhile). `autocommit`: each statement is
    its own transaction (no BEGIN/COMMIT round trips), unless the holder sends `BEGIN` /
    `COMMIT` itself on `driver()` (the consumer runner does)."""

    def __init__(self, engine: AsyncEngine, *, autocommit: bool = False) -> None:
        self.engine = engine
        self.autocommit = autocommit
        self.conn: AsyncConnection | None = None
        self._driver: Any = None  # conn's driver connection, once asked for

    async def get(self) -> AsyncConnection:
        if self.conn is not None and (self.conn.closed or self.conn.invalidated):
            await self.release()
        if self.conn is None:
            conn = await self.engine.connect()
            if self.autocommit:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            self.conn, self._driver = conn, None
        return self.conn

    async def driver(self) -> Any:
        """The driver's (asyncpg) connection under `get()`'s, for statements SQLAlchemy does not
        send: an `autocommit` holder's own `BEGIN` / `COMMIT` (SQLAlchemy's reset on return
        does not know of those: `release` and `end_transaction` end them)."""
        conn = await self.get()
        if self._driver is None:
            self._driver = (await conn.get_raw_connection()).driver_connection
        return self._driver

    async def end_transaction(self) -> None:
        """Roll back a transaction block begun on the driver's connection, if one is open; if
        that fails, the connection is discarded (closing it rolls back just the same)."""
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            return
        try:
            driver = await self.driver()
            if driver.is_in_transaction():
                await driver.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - state unknown: the connection goes
            await self.discard()

    async def release(self) -> None:
        """Give the connection back to the pool (idle for a while, or a retry that should start
        on a fresh one: the pool's pre-ping replaces it if it is dead), with no transaction
        left open on it."""
        await self.end_transaction()
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def discard(self) -> None:
        """Close the connection without returning it to the pool: after an error mid-statement
        its state is unknown."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            await conn.invalidate()
            await conn.close()
        except Exception:  # noqa: BLE001 - already broken: nothing to release
            log.debug("closing a broken held connection failed", exc_info=True)
