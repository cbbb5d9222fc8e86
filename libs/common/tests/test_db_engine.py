"""The pool's pre-ping: one round trip, none for a connection given back a moment ago, and a
connection killed while pooled (a PostgreSQL restart) costs no failed request: the next checkout
reconnects."""

from __future__ import annotations

from common.db import create_engine
from common.db import engine as db_engine
from common.messaging.worker import worker_engine
from sqlalchemy import text

from tests.support import superuser


async def test_a_pooled_connection_killed_behind_the_pools_back_is_replaced_on_checkout(bb_settings):
    engine = create_engine(bb_settings)
    try:
        async with engine.connect() as conn:
            first = await conn.scalar(text("SELECT pg_backend_pid()"))
        async with superuser() as admin:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
            await admin.execute("SELECT pg_sleep(0.2)")
        # Given back well within RECENT_S: its closed socket, not the clock, decides the ping.
        async with engine.begin() as conn:  # no error: the ping saw the dead connection
            second = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()


async def test_the_ping_is_one_statement_and_skipped_for_a_connection_just_given_back(
    bb_settings, monkeypatch
):
    engine = create_engine(bb_settings)
    sent: list[str] = []
    try:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            raw.add_query_logger(lambda record: sent.append(record.query))
        # Given back a moment ago, its socket open: no ping, the transaction begins at once.
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 2")) == 2
        assert sent[:1] == ["BEGIN;"], sent
        # Idle for longer than RECENT_S: one `;` (SQLAlchemy's own ping sends BEGIN; ; ROLLBACK;).
        sent.clear()
        monkeypatch.setattr(db_engine, "RECENT_S", 0.0)
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 3")) == 3
        assert sent[:2] == [";", "BEGIN;"], sent
    finally:
        await engine.dispose()


async def test_worker_connections_plan_each_run_for_its_own_array_size(bb_settings):
    """Worker statements take arrays of one row to thousands: a generic plan (PostgreSQL's pick
    after five runs) made 5,000 delivery reports take 7.4 s instead of 2.0 s."""
    engine = worker_engine(bb_settings)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
            assert await conn.scalar(text("SHOW jit")) == "off"
            assert await conn.scalar(text("SHOW search_path")) == bb_settings.db_schema
    finally:
        await engine.dispose()
    api = create_engine(bb_settings)  # the API's engine keeps the defaults
    try:
        async with api.connect() as conn:
            assert await conn.scalar(text("SHOW plan_cache_mode")) == "auto"
    finally:
        await api.dispose()
