"""Backbone test fixtures: a scratch schema `bbtest` with its own role, like a service's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import backbone_proc  # noqa: E402
from common.contracts.registry import register  # noqa: E402
from common.db import create_engine, create_session_factory  # noqa: E402
from common.messaging.tables import create_backbone_tables  # noqa: E402

from tests.support import superuser  # noqa: E402

SCHEMA = "bbtest"


async def _prepare_schema() -> None:
    async with superuser() as conn:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", SCHEMA):
            await conn.execute(f"CREATE ROLE {SCHEMA} LOGIN PASSWORD '{SCHEMA}'")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA} AUTHORIZATION {SCHEMA}")
    settings = backbone_proc.settings_for(SCHEMA)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('bbtest.outbox') IS NOT NULL"))
        if not exists:
            await conn.run_sync(lambda c: create_backbone_tables(c, SCHEMA))
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS effects (id bigserial PRIMARY KEY, event_type text, "
                "event_id text, seq int, at timestamptz DEFAULT now())"
            )
        )
    await engine.dispose()


@pytest.fixture(scope="session")
async def bb_settings():
    await _prepare_schema()
    return backbone_proc.settings_for(SCHEMA)


@pytest.fixture(scope="session")
async def bb_sessions(bb_settings):
    engine = create_engine(bb_settings)
    yield create_session_factory(engine, bb_settings)
    await engine.dispose()


class Contract:
    def __init__(self) -> None:
        self.type = f"bb{uuid.uuid4().hex[:10]}.item.created.v1"
        self.model = type(f"Item_{self.type.split('.')[0]}", (backbone_proc.Item,), {})
        register(self.type, self.model)


@pytest.fixture
async def contract(bb_settings):
    """A run-unique event contract, so every test has its own topic and consumer groups."""
    from common.contracts import topic_for
    from common.messaging.kafka import delete_topics, ensure_topics

    c = Contract()
    await ensure_topics(bb_settings, [topic_for(c.type)])
    yield c
    await delete_topics(bb_settings, [topic_for(c.type)])
    # Rows a failed test left unpublished would hold the scratch outbox back for later tests.
    engine = create_engine(bb_settings)
    async with engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM outbox WHERE topic = :t AND published_at IS NULL"), {"t": topic_for(c.type)}
        )
    await engine.dispose()


class Proc:
    """A backbone_proc.py child process whose output is kept for assertions."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "backbone_proc.py"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    async def wait_exit(self, timeout: float) -> int:
        for _ in range(int(timeout * 10)):
            if self.proc.poll() is not None:
                await self._reader
                return self.proc.returncode
            await asyncio.sleep(0.1)
        raise AssertionError(f"process still running after {timeout}s:\n{self.output()[-3000:]}")

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await self.wait_exit(20)
            except AssertionError:
                self.proc.kill()
        await self._reader


@pytest.fixture
async def procs():
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        p = Proc(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        await p.stop()
