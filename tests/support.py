"""Helpers for tests against the real local stack started by `scripts/devstack.py up`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from common.db import create_engine
from sqlalchemy.ext.asyncio import AsyncSession

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = "http://127.0.0.1:8080"
PG_SOCKET = str(ROOT / ".local" / "pg" / "run")
PG_PORT = 55432
KAFKA = "127.0.0.1:59092"
LOGS = ROOT / ".local" / "logs"
SERVICE_PORTS = {
    "auth": 8101,
    "messaging": 8102,
    "chat": 8103,
    "media": 8104,
    "billing": 8105,
    "provider-sync": 8106,
}


def devstack(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `scripts/devstack.py ctl ...` (supervisorctl on the stack's own supervisord)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "devstack.py"), *args],
        check=check, text=True, capture_output=True,
    )


async def superuser_conn(database: str = "switchboard"):
    import asyncpg

    return await asyncpg.connect(host=PG_SOCKET, port=PG_PORT, user="postgres", database=database)


@asynccontextmanager
async def rollback_session(settings) -> AsyncIterator[AsyncSession]:  # noqa: ANN001
    """A session on the service's real schema whose work is rolled back at the end (the test's
    commits become savepoints), so service-level tests leave nothing behind."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            outer = await conn.begin()
            session = AsyncSession(
                bind=conn,
                expire_on_commit=False,
                join_transaction_mode="create_savepoint",
                info={"source": f"/switchboard/{settings.service_name}"},
            )
            try:
                yield session
            finally:
                await session.close()
                await outer.rollback()
    finally:
        await engine.dispose()
