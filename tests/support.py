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


AUTH_DIRECT = "http://127.0.0.1:8101"


def random_phone() -> str:
    """A valid, unused-looking US number (+1 NXX 555 01XX is reserved for fiction)."""
    import random

    import phonenumbers

    while True:
        area = random.choice([201, 202, 212, 213, 303, 312, 404, 415, 512, 617, 702, 713, 805])
        candidate = f"+1{area}{random.randint(200, 999)}{random.randint(0, 9999):04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate


def random_ip() -> str:
    """A client address of its own (198.18.0.0/15, the benchmarking range) for one test."""
    import random

    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class EventTap:
    """Reads one topic from its end, with a group of its own, and finds events by predicate:
    how a test receives what the platform sends out (an OTP, a reset link)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.seen: list[dict] = []

    async def __aenter__(self) -> EventTap:
        import uuid

        from common.messaging.kafka import make_consumer
        from common.settings import BaseServiceSettings

        settings = BaseServiceSettings(service_name="test-tap", kafka_session_timeout_ms=6000)
        self.consumer = make_consumer(settings, f"tap-{uuid.uuid4().hex}", self.topic)
        await self.consumer.start()
        while not self.consumer.assignment():
            await self.consumer.getmany(timeout_ms=200)
        for tp in self.consumer.assignment():
            await self.consumer.seek_to_end(tp)
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def find(self, predicate, timeout: float = 20.0) -> dict:  # noqa: ANN001
        import asyncio
        import json
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.seen:
                if predicate(event):
                    return event
            batches = await self.consumer.getmany(timeout_ms=300)
            for records in batches.values():
                self.seen.extend(json.loads(r.value) for r in records)
            await asyncio.sleep(0)
        raise AssertionError(f"no matching event on {self.topic} within {timeout}s")
