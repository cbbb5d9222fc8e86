"""Switchboard benchmarks (`make bench`). See bench/README.md.

Scenario "backbone": events through outbox -> relay -> Kafka -> consumer with inbox, compared
with raw aiokafka produce -> consume of the same records, measured in the same run:

  * throughput: N events written as fast as possible (raw: producer.send; backbone: emit() in
    transactions of --tx-size events), measured from the first send/emit to the last
    received/handled event;
  * paced: --rate events/s for --paced-seconds, end-to-end latency percentiles;
  * diagnostics: where the time goes per event (emit -> relay claim -> handler -> commit), and
    each stage alone (emit / relay / consumer draining a backlog) plus database round trips.

Goals (from the issue): backbone throughput >= 50% of raw; backbone p99 < 50 ms at 1,000 ev/s.

Everything targets 127.0.0.1 (and the local PostgreSQL unix socket for the one-off role/schema
setup). Every loop is bounded in count and time, and the whole run has a global time budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from common.contracts import topic_for
from common.contracts.base import Payload
from common.contracts.envelope import EventEnvelope
from common.contracts.registry import register
from common.db import create_engine, create_session_factory
from common.messaging import emit
from common.messaging.consumer import EventConsumer
from common.messaging.kafka import delete_topics, ensure_topics, make_consumer, make_producer
from common.messaging.relay import HEADERS, OutboxRelay
from common.messaging.tables import create_backbone_tables
from common.settings import BaseServiceSettings
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PG_SOCKET_DIR = ROOT / ".local" / "pg" / "run"

HOST = "127.0.0.1"  # the only host this script ever talks to
PG_PORT = 55432
KAFKA_PORT = 59092
DATABASE = "switchboard"
SCHEMA = "bench"  # also the role name and password

GOAL_RATIO = 0.5
GOAL_P99_MS = 50.0

# seq = phase * PHASE_SPAN + i, so one consumer can tell the phases apart.
PHASE_SPAN = 1_000_000
THROUGHPUT, PACED, WARMUP, ISOLATED = 0, 1, 2, 3

log = logging.getLogger("bench")


class ClientLogCounter(logging.Handler):
    """Counts warnings/errors of the Kafka client and the backbone, shows only the first few.

    A broker restart or a rebalance during a run shows up here (and in the JSON): such a run
    measures the outage, not the backbone.
    """

    def __init__(self, show: int = 3) -> None:
        super().__init__(level=logging.WARNING)
        self.show = show  # lines kept (and printed) per logger and level
        self.counts: dict[str, int] = {}
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}:{record.levelname}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] <= self.show and len(self.first) < 30:
            line = f"{record.levelname} {record.name}: {record.getMessage()}"[:300]
            if record.exc_info and record.exc_info[1] is not None:
                line += f" [{record.exc_info[1]!r}]"[:200]
            self.first.append(line)
            print(f"  [log] {line}", file=sys.stderr)


LOG_COUNTER = ClientLogCounter()


# -- the payload ------------------------------------------------------------------------------


class BenchItem(Payload):
    seq: int
    sent_at: float  # time.time() when the event was emitted / sent
    body: str


class IsolatedItem(BenchItem):
    """The same payload under a second contract (its own topic) for the per-stage diagnostics."""


BODY = "x" * 200


# -- helpers ----------------------------------------------------------------------------------


class Deadline:
    """The global time budget of the run."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def cap(self, seconds: float) -> float:
        return min(seconds, self.remaining())

    def expired(self) -> bool:
        return self.remaining() <= 0


class BenchError(RuntimeError):
    pass


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """Nearest-rank percentiles, in milliseconds (input in seconds)."""
    if not values:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(values)

    def rank(q: float) -> float:
        idx = min(len(s) - 1, max(0, int(-(-q * len(s) // 1)) - 1))
        return round(s[idx] * 1000, 3)

    return {
        "count": len(s),
        "mean_ms": round(sum(s) / len(s) * 1000, 3),
        "p50_ms": rank(0.50),
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
        "max_ms": round(s[-1] * 1000, 3),
    }


@dataclass
class PhaseStats:
    expected: int
    seen: dict[int, tuple[float, float]] = field(default_factory=dict)  # seq -> (sent_at, at)
    duplicates: int = 0
    first_at: float | None = None
    last_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Collector:
    """Receives (seq, sent_at, arrival time) from a consumer and tracks each phase."""

    def __init__(self) -> None:
        self.phases: dict[int, PhaseStats] = {}
        self.unexpected = 0

    def expect(self, phase: int, count: int) -> PhaseStats:
        stats = PhaseStats(expected=count)
        self.phases[phase] = stats
        if count == 0:
            stats.done.set()
        return stats

    def record(self, seq: int, sent_at: float, at: float) -> None:
        stats = self.phases.get(seq // PHASE_SPAN)
        if stats is None:
            self.unexpected += 1
            return
        if seq in stats.seen:
            stats.duplicates += 1
            return
        stats.seen[seq] = (sent_at, at)
        if stats.first_at is None:
            stats.first_at = at
        stats.last_at = at
        if len(stats.seen) >= stats.expected:
            stats.done.set()

    def latencies(self, phase: int) -> list[float]:
        return [at - sent for sent, at in self.phases[phase].seen.values()]


async def wait_phase(stats: PhaseStats, limit_s: float, tasks: list[asyncio.Task]) -> bool:
    """Wait until the phase has everything, a background task dies, or the timeout passes."""
    waiter = asyncio.create_task(stats.done.wait())
    try:
        await asyncio.wait({waiter, *tasks}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    for task in tasks:
        if task.done():
            exc = task.exception() if not task.cancelled() else None
            raise BenchError(f"background task {task.get_name()} stopped early: {exc!r}")
    return stats.done.is_set()


async def stop_tasks(stop: asyncio.Event, tasks: list[asyncio.Task], limit_s: float = 10.0) -> None:
    stop.set()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def paced(
    rate: float,
    seconds: float,
    send_batch: Callable[[int, int], Awaitable[None]],
    max_batch: int,
    deadline: Deadline,
) -> dict[str, Any]:
    """Call send_batch(first_index, count) so that `rate` events/s go out, by the clock.

    Whatever is due when the previous batch returns goes out as one batch (at most max_batch),
    so a sender that keeps up sends one event per call.
    """
    total = int(rate * seconds)
    sent = batches = iterations = 0
    max_lag = 0.0
    t0 = time.monotonic()
    end = t0 + deadline.cap(seconds * 1.5 + 2)
    while sent < total and iterations < total * 4 + 1000 and time.monotonic() < end:
        iterations += 1
        now = time.monotonic()
        due = min(total, int((now - t0) * rate) + 1) - sent
        if due <= 0:
            await asyncio.sleep(max(0.0, t0 + sent / rate - now))
            continue
        max_lag = max(max_lag, now - (t0 + sent / rate))
        count = min(due, max_batch)
        await send_batch(sent, count)
        sent += count
        batches += 1
    elapsed = time.monotonic() - t0
    return {
        "target_rate": rate,
        "target_events": total,
        "events": sent,
        "seconds": round(elapsed, 3),
        "achieved_rate": round(sent / elapsed, 1) if elapsed > 0 else None,
        "sends": batches,
        "mean_events_per_send": round(sent / batches, 2) if batches else None,
        "max_behind_schedule_ms": round(max_lag * 1000, 3),
    }


def envelope_for(event_type: str, seq: int) -> EventEnvelope:
    return EventEnvelope(
        source=f"/switchboard/{SCHEMA}",
        type=event_type,
        subject=str(seq),
        data=BenchItem(seq=seq, sent_at=time.time(), body=BODY),
    )


def raw_record(event_type: str, seq: int) -> bytes:
    """The same bytes the relay publishes: the envelope as JSON (spaced, like jsonb::text)."""
    return json.dumps(envelope_for(event_type, seq).model_dump(mode="json", by_alias=True)).encode()


# -- setup ------------------------------------------------------------------------------------


async def ensure_role_and_schema() -> None:
    conn = await asyncpg.connect(
        host=str(PG_SOCKET_DIR), port=PG_PORT, user="postgres", database=DATABASE, timeout=10
    )
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", SCHEMA):
            await conn.execute(f"CREATE ROLE {SCHEMA} LOGIN PASSWORD '{SCHEMA}'")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA} AUTHORIZATION {SCHEMA}")
        await conn.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")
        await conn.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {SCHEMA}")
    finally:
        await conn.close()


async def prepare_tables(engine) -> None:  # noqa: ANN001
    async with engine.begin() as conn:
        exists = await conn.scalar(text(f"SELECT to_regclass('{SCHEMA}.outbox') IS NOT NULL"))
        if not exists:
            await conn.run_sync(lambda c: create_backbone_tables(c, SCHEMA))
        await conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.side_effects ("
                "seq bigint NOT NULL, event_id text NOT NULL, "
                "handled_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        )
        await conn.execute(
            text(
                f"TRUNCATE {SCHEMA}.outbox, {SCHEMA}.inbox, {SCHEMA}.side_effects RESTART IDENTITY"
            )
        )


async def postgres_started_at(engine) -> str:  # noqa: ANN001
    async with engine.connect() as conn:
        return str(await conn.scalar(text("SELECT pg_postmaster_start_time()")))


def machine_info() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    versions = {}
    for mod in ("aiokafka", "asyncpg", "sqlalchemy", "pydantic"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {
        "nproc": affinity or os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": load,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "libraries": versions,
    }


# -- raw aiokafka -----------------------------------------------------------------------------


async def raw_consume(consumer, collector: Collector, stop: asyncio.Event, hard_end: float) -> None:  # noqa: ANN001
    while not stop.is_set() and time.monotonic() < hard_end:
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        now = time.time()
        received = 0
        for records in batches.values():
            for record in records:
                data = json.loads(record.value)["data"]
                collector.record(data["seq"], data["sentAt"], now)
                received += 1
        if received:
            await consumer.commit()


async def run_raw(
    settings: BaseServiceSettings,
    event_type: str,
    topic: str,
    cfg: argparse.Namespace,
    deadline: Deadline,
) -> dict[str, Any]:
    producer = make_producer(settings)
    consumer = make_consumer(settings, f"{cfg.run_tag}-raw", topic)
    collector = Collector()
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    out: dict[str, Any] = {"topic": topic}
    try:
        await asyncio.wait_for(producer.start(), deadline.cap(30))
        await asyncio.wait_for(consumer.start(), deadline.cap(30))
        tasks.append(
            asyncio.create_task(
                raw_consume(consumer, collector, stop, time.monotonic() + deadline.remaining()),
                name="raw-consumer",
            )
        )

        async def send(seq: int) -> asyncio.Future:
            return await producer.send(
                topic, value=raw_record(event_type, seq), key=str(seq).encode(), headers=HEADERS
            )

        # warm-up: group join, partition assignment, metadata
        warm = collector.expect(WARMUP, cfg.warmup)
        warm_acks = [await send(WARMUP * PHASE_SPAN + i) for i in range(cfg.warmup)]
        await asyncio.wait_for(asyncio.gather(*warm_acks), deadline.cap(60))
        if not await wait_phase(warm, deadline.cap(60), tasks):
            raise BenchError("raw warm-up events did not arrive within the time limit")

        # throughput
        n = cfg.events
        stats = collector.expect(THROUGHPUT, n)
        futures = []
        t0 = time.time()
        for i in range(n):
            if i % 500 == 0 and deadline.expired():
                break
            futures.append(await send(THROUGHPUT * PHASE_SPAN + i))
        sent = len(futures)
        await asyncio.wait_for(asyncio.gather(*futures), deadline.cap(60))
        t_acked = time.time()
        complete = await wait_phase(stats, deadline.cap(cfg.phase_timeout), tasks)
        received = len(stats.seen)
        span = (stats.last_at or t0) - t0
        out["throughput"] = {
            "events_sent": sent,
            "events_received": received,
            "complete": complete and sent == n,
            "duplicates": stats.duplicates,
            "seconds": round(span, 3),
            "events_per_s": round(received / span, 1) if span > 0 else None,
            "produce_acked_events_per_s": round(sent / (t_acked - t0), 1) if t_acked > t0 else None,
            "latency": percentiles(collector.latencies(THROUGHPUT)),
            "record_bytes": len(raw_record(event_type, 0)),
        }

        # paced
        if deadline.remaining() < cfg.paced_seconds + 5:
            out["paced"] = {"skipped": "time budget exhausted"}
            return out
        pstats = collector.expect(PACED, int(cfg.rate * cfg.paced_seconds))
        pfutures: list[asyncio.Future] = []

        async def send_batch(first: int, count: int) -> None:
            for i in range(first, first + count):
                pfutures.append(await send(PACED * PHASE_SPAN + i))

        pacing = await paced(cfg.rate, cfg.paced_seconds, send_batch, cfg.paced_max_batch, deadline)
        await asyncio.wait_for(asyncio.gather(*pfutures), deadline.cap(60))
        pstats.expected = pacing["events"]
        if len(pstats.seen) >= pstats.expected:
            pstats.done.set()
        complete = await wait_phase(pstats, deadline.cap(cfg.drain_timeout), tasks)
        out["paced"] = {
            **pacing,
            "events_received": len(pstats.seen),
            "complete": complete,
            "duplicates": pstats.duplicates,
            "latency": percentiles(collector.latencies(PACED)),
        }
        return out
    finally:
        await stop_tasks(stop, tasks)
        for client in (consumer, producer):
            try:
                await asyncio.wait_for(client.stop(), 10)
            except Exception as exc:  # noqa: BLE001
                log.warning("raw client stop failed: %r", exc)


# -- the backbone -----------------------------------------------------------------------------


_EFFECT = text(f"INSERT INTO {SCHEMA}.side_effects (seq, event_id) VALUES (:s, :i)")


async def side_effect(session, envelope) -> None:  # noqa: ANN001
    await session.execute(_EFFECT, {"s": envelope.data.seq, "i": envelope.id})


async def stage_breakdown(engine, collector: Collector, phase: int) -> dict[str, Any]:  # noqa: ANN001
    """Where the time goes, per event, from the rows' own timestamps.

    sent_at (emit, Python) -> published_at (relay claim transaction start, Postgres now())
    -> handled_at (handler ran, clock_timestamp()) -> visible (consumer commit, on_committed).
    """
    lo, hi = phase * PHASE_SPAN, (phase + 1) * PHASE_SPAN
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    f"SELECT s.seq, extract(epoch FROM o.published_at)::float8 AS pub, "
                    f"extract(epoch FROM s.handled_at)::float8 AS handled "
                    f"FROM {SCHEMA}.side_effects s JOIN {SCHEMA}.outbox o USING (event_id) "
                    f"WHERE s.seq >= :lo AND s.seq < :hi"
                ),
                {"lo": lo, "hi": hi},
            )
        ).all()
    seen = collector.phases[phase].seen
    to_relay, relay_to_handler, handler_to_visible = [], [], []
    pubs, handles = [], []
    for seq, pub, handled in rows:
        if seq not in seen or pub is None:
            continue
        sent_at, visible = seen[seq]
        to_relay.append(pub - sent_at)
        relay_to_handler.append(handled - pub)
        handler_to_visible.append(visible - handled)
        pubs.append(pub)
        handles.append(handled)

    def rate(ts: list[float]) -> float | None:
        if len(ts) < 2 or max(ts) <= min(ts):
            return None
        return round(len(ts) / (max(ts) - min(ts)), 1)

    return {
        "emit_to_relay_claim": percentiles(to_relay),
        "relay_claim_to_handler": percentiles(relay_to_handler),
        "handler_to_commit_visible": percentiles(handler_to_visible),
        "relay_claim_events_per_s": rate(pubs),
        "handler_events_per_s": rate(handles),
    }


async def run_backbone(
    settings: BaseServiceSettings, event_type: str, cfg: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    engine = create_engine(settings)
    sessions = create_session_factory(engine, settings)
    collector = Collector()

    def on_committed(handled) -> None:  # noqa: ANN001
        now = time.time()
        for envelope in handled:
            collector.record(envelope.data.seq, envelope.data.sent_at, now)

    relay = OutboxRelay(settings, sessions)
    consumer = EventConsumer(
        settings,
        sessions,
        f"{cfg.run_tag}-backbone",
        {event_type: side_effect},
        on_committed=on_committed,
    )
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(relay.run(stop), name="outbox-relay"),
        asyncio.create_task(consumer.run(stop), name="event-consumer"),
    ]
    out: dict[str, Any] = {
        "topic": topic_for(event_type),
        "outbox_batch_size": settings.outbox_batch_size,
        "outbox_poll_interval_s": settings.outbox_poll_interval_s,
        "tx_size": cfg.tx_size,
    }

    async def emit_tx(first_seq: int, count: int) -> None:
        async with sessions() as session, session.begin():
            for seq in range(first_seq, first_seq + count):
                await emit(
                    session,
                    BenchItem(seq=seq, sent_at=time.time(), body=BODY),
                    subject=str(seq),
                )

    try:
        warm = collector.expect(WARMUP, cfg.warmup)
        await emit_tx(WARMUP * PHASE_SPAN, cfg.warmup)
        if not await wait_phase(warm, deadline.cap(60), tasks):
            raise BenchError("backbone warm-up events were not handled within the time limit")

        # throughput
        n = cfg.events
        stats = collector.expect(THROUGHPUT, n)
        written = 0
        t0 = time.time()
        for first in range(0, n, cfg.tx_size):
            if deadline.expired():
                break
            count = min(cfg.tx_size, n - first)
            await emit_tx(THROUGHPUT * PHASE_SPAN + first, count)
            written += count
        t_emitted = time.time()
        complete = await wait_phase(stats, deadline.cap(cfg.phase_timeout), tasks)
        handled = len(stats.seen)
        span = (stats.last_at or t0) - t0
        drained = complete
        if not complete:
            # Throughput is what was handled within the limit; let the rest drain (bounded) so
            # the side-effect check covers all N and the paced run does not start with a backlog.
            drained = await wait_phase(stats, deadline.cap(cfg.drain_timeout), tasks)
        async with engine.connect() as conn:
            effects, distinct = (
                await conn.execute(
                    text(
                        f"SELECT count(*), count(DISTINCT seq) FROM {SCHEMA}.side_effects "
                        "WHERE seq >= :lo AND seq < :hi"
                    ),
                    {"lo": THROUGHPUT * PHASE_SPAN, "hi": (THROUGHPUT + 1) * PHASE_SPAN},
                )
            ).one()
            record_bytes = await conn.scalar(
                text(f"SELECT avg(octet_length(envelope::text))::int FROM {SCHEMA}.outbox")
            )
        out["throughput"] = {
            "events_emitted": written,
            "events_handled": handled,
            "complete": complete and written == n,
            "drained_after_limit": drained and not complete,
            "events_handled_after_drain": len(stats.seen),
            "duplicates": stats.duplicates,
            "seconds": round(span, 3),
            "events_per_s": round(handled / span, 1) if span > 0 else None,
            "emit_events_per_s": round(written / (t_emitted - t0), 1) if t_emitted > t0 else None,
            "side_effect_rows": effects,
            "side_effect_distinct": distinct,
            "side_effects_ok": effects == n and distinct == n,
            "latency": percentiles(collector.latencies(THROUGHPUT)),
            "record_bytes": record_bytes,
            "stages": await stage_breakdown(engine, collector, THROUGHPUT),
        }

        # paced
        if deadline.remaining() < cfg.paced_seconds + 5:
            out["paced"] = {"skipped": "time budget exhausted"}
            return out
        pstats = collector.expect(PACED, int(cfg.rate * cfg.paced_seconds))

        async def send_batch(first: int, count: int) -> None:
            await emit_tx(PACED * PHASE_SPAN + first, count)

        backlog = stats.expected - len(stats.seen)
        pacing = await paced(cfg.rate, cfg.paced_seconds, send_batch, cfg.paced_max_batch, deadline)
        pstats.expected = pacing["events"]
        if len(pstats.seen) >= pstats.expected:
            pstats.done.set()
        complete = await wait_phase(pstats, deadline.cap(cfg.drain_timeout), tasks)
        out["paced"] = {
            **pacing,
            "backlog_at_start": backlog,
            "events_handled": len(pstats.seen),
            "complete": complete,
            "duplicates": pstats.duplicates,
            "latency": percentiles(collector.latencies(PACED)),
            "stages": await stage_breakdown(engine, collector, PACED),
        }
        async with engine.connect() as conn:
            total_effects = await conn.scalar(text(f"SELECT count(*) FROM {SCHEMA}.side_effects"))
            total_inbox = await conn.scalar(text(f"SELECT count(*) FROM {SCHEMA}.inbox"))
        out["totals"] = {
            "side_effect_rows": total_effects,
            "inbox_rows": total_inbox,
            "handled_callbacks": sum(len(p.seen) for p in collector.phases.values()),
        }
        return out
    finally:
        await stop_tasks(stop, tasks)
        await engine.dispose()


# -- per-stage diagnostics --------------------------------------------------------------------


async def db_round_trips(engine, sessions) -> dict[str, Any]:  # noqa: ANN001
    """The unit cost behind every per-event statement: one round trip, one durable commit."""
    out: dict[str, Any] = {}
    async with sessions() as session, session.begin():
        times = []
        for _ in range(200):
            t = time.perf_counter()
            await session.execute(text("SELECT 1"))
            times.append(time.perf_counter() - t)
        out["sqlalchemy_session_select1"] = percentiles(times)
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        apg = raw.driver_connection
        times = []
        for _ in range(200):
            t = time.perf_counter()
            await apg.fetchval("SELECT 1")
            times.append(time.perf_counter() - t)
        out["asyncpg_select1"] = percentiles(times)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        async with sessions() as session, session.begin():
            await session.execute(text("SELECT pg_current_xact_id()"))  # forces a WAL flush
        times.append(time.perf_counter() - t)
    out["write_transaction_commit"] = percentiles(times)
    return out


async def run_isolated(
    settings: BaseServiceSettings, cfg: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    """Each backbone stage alone, on its own topic: emit with nothing else running, the relay
    draining that outbox backlog alone, then the consumer draining that topic alone."""
    m = cfg.isolated_events
    event_type = f"{cfg.run_tag}x.item.created.v1"
    register(event_type, IsolatedItem)
    await asyncio.wait_for(ensure_topics(settings, [topic_for(event_type)]), deadline.cap(30))
    engine = create_engine(settings)
    sessions = create_session_factory(engine, settings)
    out: dict[str, Any] = {"events": m, "topic": topic_for(event_type)}
    try:
        out["db"] = await db_round_trips(engine, sessions)

        # emit alone
        base = ISOLATED * PHASE_SPAN
        t0 = time.perf_counter()
        for first in range(0, m, cfg.tx_size):
            async with sessions() as session, session.begin():
                for seq in range(base + first, base + min(m, first + cfg.tx_size)):
                    await emit(
                        session,
                        IsolatedItem(seq=seq, sent_at=time.time(), body=BODY),
                        subject=str(seq),
                    )
        out["emit_alone_events_per_s"] = round(m / (time.perf_counter() - t0), 1)

        # relay alone, draining that backlog (includes the producer start)
        unpublished = text(
            f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL AND event_type = :t"
        )
        stop = asyncio.Event()
        t0 = time.perf_counter()
        relay_task = asyncio.create_task(OutboxRelay(settings, sessions).run(stop), name="relay")
        left = m
        try:
            limit = time.monotonic() + deadline.cap(30)
            while left and time.monotonic() < limit and not relay_task.done():
                await asyncio.sleep(0.02)
                async with engine.connect() as conn:
                    left = await conn.scalar(unpublished, {"t": event_type})
            relay_s = time.perf_counter() - t0
        finally:
            await stop_tasks(stop, [relay_task])
        out["relay_alone_events_per_s"] = round((m - left) / relay_s, 1) if relay_s else None
        out["relay_alone_complete"] = left == 0

        # consumer alone, draining that topic
        collector = Collector()
        stats = collector.expect(ISOLATED, m)
        commits = 0

        def on_committed(handled) -> None:  # noqa: ANN001
            nonlocal commits
            commits += 1
            now = time.time()
            for envelope in handled:
                collector.record(envelope.data.seq, envelope.data.sent_at, now)

        consumer = EventConsumer(
            settings,
            sessions,
            f"{cfg.run_tag}-isolated",
            {event_type: side_effect},
            on_committed=on_committed,
        )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(consumer.run(stop), name="isolated-consumer")]
        try:
            complete = await wait_phase(stats, deadline.cap(45), tasks)
        finally:
            await stop_tasks(stop, tasks)
        arrivals = sorted(at for _, at in stats.seen.values())
        first_batch = sum(1 for at in arrivals if at == arrivals[0]) if arrivals else 0
        span = arrivals[-1] - arrivals[0] if arrivals else 0.0
        out["consumer_alone_events_per_s"] = (
            round((len(arrivals) - first_batch) / span, 1) if span > 0 else None
        )
        out["consumer_alone_complete"] = complete
        out["consumer_transactions"] = commits
        out["consumer_mean_events_per_transaction"] = (
            round(len(arrivals) / commits, 1) if commits else None
        )
        return out
    finally:
        await engine.dispose()


# -- main -------------------------------------------------------------------------------------


async def remove_topics(settings: BaseServiceSettings, topics: list[str]) -> None:
    """Best effort: delete this run's topics and their DLQs."""
    try:
        await asyncio.wait_for(delete_topics(settings, topics), 20)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not delete bench topics %s: %r", topics, exc)


def summarize(result: dict[str, Any]) -> str:
    bb = result["scenarios"]["backbone"]
    lines = [
        f"bench {result['run_id']}  ({result['machine']['nproc']} CPUs, Python {result['machine']['python']})"
    ]

    def fmt_lat(lat: dict[str, Any] | None) -> str:
        if not lat or not lat.get("count"):
            return "n/a"
        return (
            f"p50 {lat['p50_ms']:.1f}  p95 {lat['p95_ms']:.1f}  p99 {lat['p99_ms']:.1f}  "
            f"max {lat['max_ms']:.1f} ms"
        )

    raw, back = bb.get("raw", {}), bb.get("backbone", {})
    rt, bt = raw.get("throughput", {}), back.get("throughput", {})
    lines.append(
        f"  throughput  raw      {rt.get('events_per_s')} ev/s ({rt.get('events_received')} events, "
        f"{rt.get('record_bytes')} B)   latency {fmt_lat(rt.get('latency'))}"
    )
    lines.append(
        f"  throughput  backbone {bt.get('events_per_s')} ev/s ({bt.get('events_handled')} events, "
        f"emit {bt.get('emit_events_per_s')} ev/s)   latency {fmt_lat(bt.get('latency'))}"
    )
    lines.append(
        f"  side effects {bt.get('side_effect_rows')}/{result['config']['events']} "
        f"(distinct {bt.get('side_effect_distinct')})"
    )
    rp, bp = raw.get("paced", {}), back.get("paced", {})
    lines.append(
        f"  paced {result['config']['rate']:.0f}/s raw      ({rp.get('achieved_rate')} ev/s) {fmt_lat(rp.get('latency'))}"
    )
    lines.append(
        f"  paced {result['config']['rate']:.0f}/s backbone ({bp.get('achieved_rate')} ev/s) {fmt_lat(bp.get('latency'))}"
    )
    goals = bb["goals"]
    lines.append(
        f"  goal ratio >= {GOAL_RATIO:.0%}: {goals['throughput_ratio']}  "
        f"{'MET' if goals['throughput_goal_met'] else 'NOT MET'}"
    )
    lines.append(
        f"  goal p99 < {GOAL_P99_MS:.0f} ms at {result['config']['rate']:.0f}/s: "
        f"{goals['paced_p99_ms']}  {'MET' if goals['latency_goal_met'] else 'NOT MET'}"
    )
    if result.get("errors"):
        lines.append(f"  errors: {result['errors']}")
    iso = bb.get("isolated") or {}
    if iso.get("events"):
        db = iso.get("db", {})
        lines.append(
            f"  stages alone ({iso['events']} events): emit {iso.get('emit_alone_events_per_s')}  "
            f"relay {iso.get('relay_alone_events_per_s')}  "
            f"consumer {iso.get('consumer_alone_events_per_s')} ev/s;  db round trip p50 "
            f"{db.get('sqlalchemy_session_select1', {}).get('p50_ms')} ms (session), "
            f"{db.get('asyncpg_select1', {}).get('p50_ms')} ms (asyncpg), durable commit p50 "
            f"{db.get('write_transaction_commit', {}).get('p50_ms')} ms"
        )
    if result.get("disturbed"):
        lines.append(
            "  WARNING: the run was disturbed (Kafka client / backbone warnings: "
            f"{sum(result['client_log']['counts'].values())}, Postgres restarted: "
            f"{result['postgres_restarted_during_run']}); the figures may measure an outage"
        )
    return "\n".join(lines)


async def main_async(cfg: argparse.Namespace) -> dict[str, Any]:
    deadline = Deadline(cfg.budget)
    started = datetime.now(UTC)
    cfg.run_tag = f"bench{started:%Y%m%d%H%M%S}{secrets.token_hex(2)}"
    event_type = f"{cfg.run_tag}.item.created.v1"
    register(event_type, BenchItem)
    topic = topic_for(event_type)
    raw_topic = f"{cfg.run_tag}.raw"

    settings = BaseServiceSettings(
        service_name=SCHEMA,
        database_url=f"postgresql+asyncpg://{SCHEMA}:{SCHEMA}@{HOST}:{PG_PORT}/{DATABASE}",
        db_schema=SCHEMA,
        kafka_bootstrap=f"{HOST}:{KAFKA_PORT}",
        kafka_session_timeout_ms=6000,
        outbox_batch_size=cfg.outbox_batch_size,
        outbox_poll_interval_s=cfg.outbox_poll_interval,
    )
    result: dict[str, Any] = {
        "run_id": cfg.run_tag,
        "timestamp": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "events": cfg.events,
            "tx_size": cfg.tx_size,
            "rate": cfg.rate,
            "paced_seconds": cfg.paced_seconds,
            "paced_max_batch": cfg.paced_max_batch,
            "warmup": cfg.warmup,
            "outbox_batch_size": settings.outbox_batch_size,
            "outbox_poll_interval_s": settings.outbox_poll_interval_s,
            "kafka_bootstrap": settings.kafka_bootstrap,
            "budget_s": cfg.budget,
        },
        "scenarios": {"backbone": {}},
        "errors": [],
    }
    bb = result["scenarios"]["backbone"]

    await ensure_role_and_schema()
    engine = create_engine(settings)
    try:
        await prepare_tables(engine)
        pg_start = await postgres_started_at(engine)
    finally:
        await engine.dispose()
    await asyncio.wait_for(ensure_topics(settings, [topic]), deadline.cap(30))
    await asyncio.wait_for(ensure_topics(settings, [raw_topic], with_dlq=False), deadline.cap(30))

    try:
        try:
            bb["raw"] = await run_raw(settings, event_type, raw_topic, cfg, deadline)
        except Exception as exc:  # noqa: BLE001
            log.exception("raw baseline failed")
            result["errors"].append(f"raw: {exc!r}")
        try:
            bb["backbone"] = await run_backbone(settings, event_type, cfg, deadline)
        except Exception as exc:  # noqa: BLE001
            log.exception("backbone run failed")
            result["errors"].append(f"backbone: {exc!r}")
        if cfg.isolated_events and deadline.remaining() > 25:
            try:
                bb["isolated"] = await run_isolated(settings, cfg, deadline)
            except Exception as exc:  # noqa: BLE001
                log.exception("per-stage diagnostics failed")
                result["errors"].append(f"isolated: {exc!r}")
        elif cfg.isolated_events:
            bb["isolated"] = {"skipped": "time budget exhausted"}
    finally:
        if not cfg.keep_topics:
            iso_topic = topic_for(f"{cfg.run_tag}x.item.created.v1")
            await remove_topics(settings, [raw_topic, topic, iso_topic])

    raw_tp = bb.get("raw", {}).get("throughput", {}).get("events_per_s")
    back_tp = bb.get("backbone", {}).get("throughput", {}).get("events_per_s")
    ratio = round(back_tp / raw_tp, 3) if raw_tp and back_tp else None
    paced_lat = bb.get("backbone", {}).get("paced", {}).get("latency") or {}
    paced_info = bb.get("backbone", {}).get("paced", {})
    p99 = paced_lat.get("p99_ms")
    rate_ok = (
        bool(paced_info.get("achieved_rate")) and paced_info["achieved_rate"] >= 0.95 * cfg.rate
    )
    bt = bb.get("backbone", {}).get("throughput", {})
    bb["goals"] = {
        "throughput_ratio": ratio,
        "throughput_ratio_goal": GOAL_RATIO,
        "throughput_goal_met": ratio is not None
        and ratio >= GOAL_RATIO
        and bool(bt.get("complete")),
        "paced_p99_ms": p99,
        "paced_p99_goal_ms": GOAL_P99_MS,
        "paced_rate_achieved": rate_ok,
        "latency_goal_met": p99 is not None
        and p99 < GOAL_P99_MS
        and rate_ok
        and bool(paced_info.get("complete")),
        "side_effects_ok": bool(bt.get("side_effects_ok")),
    }
    engine = create_engine(settings)
    try:
        pg_restarted = await postgres_started_at(engine) != pg_start
    except Exception:  # noqa: BLE001
        pg_restarted = True
    finally:
        await engine.dispose()
    result["postgres_restarted_during_run"] = pg_restarted
    result["duration_s"] = round(cfg.budget - deadline.remaining(), 1)
    return result


def write_results(result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / ".gitkeep").touch(exist_ok=True)
    stamp = datetime.fromisoformat(result["timestamp"]).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    body = json.dumps(result, indent=2, sort_keys=False) + "\n"
    path.write_text(body)
    (RESULTS_DIR / "latest.json").write_text(body)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=20_000, help="events per throughput run")
    p.add_argument("--tx-size", type=int, default=100, help="events per emit transaction")
    p.add_argument("--rate", type=float, default=1000.0, help="paced run: events/s")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument("--paced-max-batch", type=int, default=50, help="paced run: max events per send")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--outbox-batch-size", type=int, default=500, help="settings.outbox_batch_size")
    p.add_argument(
        "--outbox-poll-interval", type=float, default=1.0, help="settings.outbox_poll_interval_s"
    )
    p.add_argument(
        "--phase-timeout", type=float, default=60.0, help="max wait for one throughput run"
    )
    p.add_argument(
        "--drain-timeout", type=float, default=20.0, help="max wait for a backlog to drain"
    )
    p.add_argument(
        "--isolated-events",
        type=int,
        default=2000,
        help="events for the per-stage diagnostics (emit / relay / consumer alone); 0: skip",
    )
    p.add_argument("--budget", type=float, default=150.0, help="global time budget, seconds")
    p.add_argument("--keep-topics", action="store_true", help="do not delete this run's topics")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    cfg = p.parse_args(argv)
    if not 0 < cfg.events < PHASE_SPAN or not 0 < cfg.rate * cfg.paced_seconds < PHASE_SPAN:
        p.error(f"--events and --rate*--paced-seconds must be in 1..{PHASE_SPAN - 1}")
    if cfg.tx_size < 1 or cfg.paced_max_batch < 1 or cfg.warmup < 1:
        p.error("--tx-size, --paced-max-batch and --warmup must be >= 1")
    return cfg


def main(argv: list[str] | None = None) -> int:
    root = logging.getLogger()
    root.handlers[:] = [LOG_COUNTER]
    root.setLevel(logging.WARNING)
    cfg = parse_args(argv)
    result = asyncio.run(main_async(cfg))
    result["client_log"] = {"counts": LOG_COUNTER.counts, "first": LOG_COUNTER.first}
    result["disturbed"] = result["postgres_restarted_during_run"] or any(
        k.startswith(("aiokafka", "common")) for k in LOG_COUNTER.counts
    )
    path = write_results(result)
    print(summarize(result))
    print(f"  results: {path.relative_to(ROOT)} (and bench/results/latest.json)")
    goals = result["scenarios"]["backbone"]["goals"]
    if result["errors"] or not goals["side_effects_ok"]:
        return 2
    if cfg.strict and not (goals["throughput_goal_met"] and goals["latency_goal_met"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
