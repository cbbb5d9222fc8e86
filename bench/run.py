"""Switchboard benchmarks (`make bench`). See bench/README.md.

Scenario "backbone": events through outbox -> relay -> Kafka -> consumer with inbox, compared
with raw aiokafka produce -> consume of the same records, measured in the same run, in the
production topology: the writer (this process, like an API process) and the consuming side
(a child process, bench/worker_proc.py, like a service's worker process) are separate OS
processes. The raw baseline gets the same split, and is also measured in one process.

  * throughput: N events written as fast as possible (raw: producer.send; backbone: emit_many()
    in transactions of --tx-size events, and per-event emit() for comparison), measured from the
    first send/emit to the last received/handled event;
  * paced: --rate events/s for --paced-seconds, one transaction per clock tick, end-to-end
    latency percentiles;
  * diagnostics: where the time goes per event (emit -> relay claim -> handler -> commit), and
    each stage alone (emit / relay / consumer draining a backlog) plus database round trips.

Scenario "auth" (bench/auth_scenario.py): token verification (JWKS cached) in a bare FastAPI app
against the same app without auth, the real billing service's /whoami, and login throughput.

Scenario "billing" (bench/billing_scenario.py): holds through the real billing worker (request
event in -> ledger commit -> reply event out) against a raw asyncpg loop writing the same rows.

Goals (from the issues): backbone throughput >= 50% of raw; backbone p99 < 50 ms at 1,000 ev/s;
the authenticated hot path keeps >= 80% of the bare throughput; billing holds/s >= 30% of the
raw rate, with the ledger invariants intact.

Everything targets 127.0.0.1 (and the local PostgreSQL unix socket for the one-off role/schema
setup). Every loop is bounded in count and time, and every scenario has a time budget.
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

from common.contracts import topic_for
from common.contracts.envelope import EventEnvelope
from common.contracts.registry import register
from common.db import create_engine, create_session_factory
from common.messaging import emit, emit_many
from common.messaging.consumer import EventConsumer
from common.messaging.kafka import delete_topics, ensure_topics, make_consumer, make_producer
from common.messaging.relay import HEADERS, OutboxRelay
from common.messaging.tables import create_backbone_tables
from common.runtime import run as run_event_loop
from common.settings import BaseServiceSettings
from shared import (
    BENCH_DIR,
    BODY,
    CPU_LOG,
    DATABASE,
    HANDLER_HELP,
    HANDLERS,
    ISOLATED,
    NOISY_OTHER_CORES,
    PACED,
    PHASE_SPAN,
    ROOT,
    SCHEMA,
    THROUGHPUT,
    THROUGHPUT_EMIT,
    WARM_UP_S,
    WARMUP,
    WATCHED,
    BenchItem,
    ClientLogCounter,
    CpuMeter,
    Deadline,
    IsolatedItem,
    as_pid,
    install_log_counter,
    is_client_problem,
    latency_by_second,
    make_settings,
    noop_handler,
    paced,
    percentiles,
    process_age_s,
    raw_fetch,
    side_effect,
    stack_pids,
    superuser,
)
from sqlalchemy import text

RESULTS_DIR = ROOT / "bench" / "results"
QUIET_CORES = 0.4  # machine-wide CPU use (idle stack ~0.1-0.2) below which a start is "quiet"
GOAL_RATIO = 0.5
GOAL_P99_MS = 50.0
SCENARIOS = ("backbone", "auth", "billing", "messaging")

log = logging.getLogger("bench")
LOG_COUNTER: ClientLogCounter = ClientLogCounter()  # replaced in main()


# -- helpers ----------------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


@dataclass
class PhaseStats:
    expected: int
    seen: dict[int, tuple[float, float]] = field(default_factory=dict)  # seq -> (sent_at, at)
    duplicates: int = 0
    first_at: float | None = None
    last_at: float | None = None
    started_at: float = field(default_factory=time.time)  # when the phase began writing
    # backbone: seq -> (Kafka CreateTime = relay send, consumer decoded the record)
    extra: dict[int, tuple[float, float]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def batches(self) -> int:
        """Distinct arrival times: consumer transactions (backbone) or fetches (raw)."""
        return len({at for _, at in self.seen.values()})


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

    def record(self, seq: int, sent_at: float, at: float, extra: tuple | None = None) -> None:
        stats = self.phases.get(seq // PHASE_SPAN)
        if stats is None:
            self.unexpected += 1
            return
        if seq in stats.seen:
            stats.duplicates += 1
            return
        stats.seen[seq] = (sent_at, at)
        if extra and None not in extra:
            stats.extra[seq] = extra
        if stats.first_at is None:
            stats.first_at = at
        stats.last_at = at
        if len(stats.seen) >= stats.expected:
            stats.done.set()

    def latencies(self, phase: int) -> list[float]:
        return [at - sent for sent, at in self.phases[phase].seen.values()]

    def by_second(self, phase: int) -> list[dict[str, Any]]:
        stats = self.phases[phase]
        return latency_by_second(stats.seen.values(), stats.started_at)


def batch_stats(batches: list[tuple[float, int, float]], start: float, end: float | None) -> dict[str, Any]:
    """Per-batch timings the child reported (relay batches or consumer partition batches)
    within [start, end]."""
    sel = [(n, d) for at, n, d in batches if at >= start and (end is None or at <= end + 0.5)]
    if not sel:
        return {"batches": 0}
    rows = sum(n for n, _ in sel)
    return {
        "batches": len(sel),
        "mean_rows": round(rows / len(sel), 1),
        "seconds": percentiles([d for _, d in sel]),
        "busy_s": round(sum(d for _, d in sel), 3),
    }


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


class ChildConsumer:
    """The consuming side in its own OS process (bench/worker_proc.py), reporting over a pipe.

    `tasks` holds the pipe reader; it ends when the child exits, which wait_phase reports.
    """

    def __init__(self, name: str, args: list[str], collector: Collector) -> None:
        self.name = name
        self.args = args
        self.collector = collector
        self.ready = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task | None = None
        self.reports = 0
        self.log_merged = False
        self.relay_batches: list[tuple[float, int, float]] = []
        self.partition_batches: list[tuple[float, int, float]] = []
        self.fetches: list[tuple[float, int, float]] = []
        self.commits: list[tuple[float, int, float]] = []

    @property
    def tasks(self) -> list[asyncio.Task]:
        return [self.reader] if self.reader else []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def timings(self, stats: PhaseStats) -> dict[str, Any]:
        start, end = stats.started_at, stats.last_at
        fetch_times = [at for at, _, _ in self.fetches if at >= start and (end is None or at <= end)]
        gaps = [b - a for a, b in zip(fetch_times, fetch_times[1:], strict=False)]
        return {
            "relay_batches": batch_stats(self.relay_batches, start, end),
            "consumer_partition_batches": batch_stats(self.partition_batches, start, end),
            "consumer_fetches": batch_stats(self.fetches, start, end),
            "consumer_offset_commits": batch_stats(self.commits, start, end),
            "consumer_loop_iteration": percentiles(gaps),
        }

    async def start(self, limit_s: float) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "worker_proc.py"),
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
            limit=16 * 1024 * 1024,
        )
        self.reader = asyncio.create_task(self._read(), name=f"{self.name}-child")
        waiter = asyncio.create_task(self.ready.wait())
        try:
            await asyncio.wait({waiter, self.reader}, timeout=limit_s, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
        if not self.ready.is_set():
            await self.stop()
            raise BenchError(f"{self.name} child process did not start (exit {self.proc.returncode})")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            kind = msg[0]
            if kind == "H":
                self.reports += 1
                at = msg[1]
                for row in msg[2]:
                    self.collector.record(row[0], row[1], at, tuple(row[2:4]) or None)
            elif kind == "R":
                self.relay_batches.append((msg[1], msg[2], msg[3]))
            elif kind == "P":
                self.partition_batches.append((msg[1], msg[2], msg[3]))
            elif kind == "F":
                self.fetches.append((msg[1], msg[2], msg[3]))
            elif kind == "C":
                self.commits.append((msg[1], msg[2], msg[3]))
            elif kind == "READY":
                self.ready.set()
            elif kind == "LOG" and not self.log_merged:
                self.log_merged = True
                LOG_COUNTER.merge(msg[1], msg[2])
        await self.proc.wait()

    async def stop(self, limit_s: float = 20.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), limit_s)
        except TimeoutError:
            log.warning("%s child did not stop in %.0f s; terminating", self.name, limit_s)
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, 5)
            except Exception:  # noqa: BLE001
                self.reader.cancel()
        return proc.returncode


# -- setup ------------------------------------------------------------------------------------


async def ensure_role_and_schema() -> None:
    conn = await superuser()
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
            text(f"ALTER TABLE {SCHEMA}.side_effects ADD COLUMN IF NOT EXISTS sent_at float8")
        )
        await conn.execute(
            text(
                f"TRUNCATE {SCHEMA}.outbox, {SCHEMA}.inbox, {SCHEMA}.side_effects RESTART IDENTITY"
            )
        )


async def postgres_started_at(engine) -> str:  # noqa: ANN001
    async with engine.connect() as conn:
        return str(await conn.scalar(text("SELECT pg_postmaster_start_time()")))


class Disturbance:
    """Did the stack restart or the Kafka client / backbone complain during a scenario?"""

    def __init__(self) -> None:
        self.pids = stack_pids()
        self.ages = {"kafka": process_age_s(self.pids.get("kafka"))}
        self.logs = LOG_COUNTER.snapshot()
        self.cpu_from = len(CPU_LOG)

    def verdict(self) -> dict[str, Any]:
        pids = stack_pids()
        restarted = sorted(k for k in WATCHED if self.pids.get(k) != pids.get(k))
        logs = {
            k: v - self.logs.get(k, 0)
            for k, v in LOG_COUNTER.snapshot().items()
            if v - self.logs.get(k, 0) > 0
        }
        outside = [c.get("outside_benchmark", 0.0) for c in CPU_LOG[self.cpu_from :]]
        worst = max(outside, default=None)
        warming = {k: age for k, age in self.ages.items() if age is not None and age < WARM_UP_S}
        return {
            "disturbed": bool(restarted) or any(is_client_problem(k) for k in logs),
            "noisy": (worst is not None and worst > NOISY_OTHER_CORES) or bool(warming),
            "warming_up": warming,  # started less than WARM_UP_S before the scenario
            "max_cores_used_outside_benchmark": worst,
            "noisy_threshold_cores": NOISY_OTHER_CORES,
            "restarted": restarted,
            "client_log_counts": logs,
            "pids_before": self.pids,
            "pids_after": pids,
        }


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
    for mod in ("aiokafka", "asyncpg", "sqlalchemy", "pydantic", "fastapi", "uvicorn", "jwt"):
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
    """Same-process raw consumer: the loop of worker_proc.run_raw, recording in place."""
    while not stop.is_set() and time.monotonic() < hard_end:
        now, seen = await raw_fetch(consumer)
        for seq, sent_at in seen:
            collector.record(seq, sent_at, now)
        if seen:
            await consumer.commit()


async def run_raw(
    settings: BaseServiceSettings,
    event_type: str,
    topic: str,
    cfg: argparse.Namespace,
    deadline: Deadline,
    *,
    split: bool,
    with_paced: bool,
) -> dict[str, Any]:
    """Raw aiokafka: this process produces; the consumer runs in a child process (split) or as a
    task in this process."""
    group = f"{cfg.run_tag}-raw{'-split' if split else ''}"
    producer = make_producer(settings)
    collector = Collector()
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    consumer = None
    child: ChildConsumer | None = None
    out: dict[str, Any] = {
        "topic": topic,
        "topology": "producer in the bench process, consumer in a child process"
        if split
        else "producer and consumer in the bench process (one event loop)",
    }
    try:
        await asyncio.wait_for(producer.start(), deadline.cap(30))
        if split:
            child = ChildConsumer(
                "raw",
                ["--mode", "raw", "--topic", topic, "--group", group,
                 "--max-seconds", str(round(deadline.remaining() + 30))],
                collector,
            )
            await child.start(deadline.cap(45))
            tasks = child.tasks
        else:
            consumer = make_consumer(settings, group, topic)
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

        pids = {"bench_writer": os.getpid(), "consumer_child": child.pid if child else None,
                "kafka": cfg.kafka_pid}

        # throughput
        n = cfg.events
        stats = collector.expect(THROUGHPUT, n)
        cpu = CpuMeter(pids)
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
        cpu_busy = cpu.result()
        received = len(stats.seen)
        span = (stats.last_at or t0) - t0
        out["throughput"] = {
            "cpu_cores_busy": cpu_busy,
            "events_sent": sent,
            "events_received": received,
            "complete": complete and sent == n,
            "duplicates": stats.duplicates,
            "seconds": round(span, 3),
            "events_per_s": round(received / span, 1) if span > 0 else None,
            "produce_acked_events_per_s": round(sent / (t_acked - t0), 1) if t_acked > t0 else None,
            "fetches": stats.batches(),
            "latency": percentiles(collector.latencies(THROUGHPUT)),
            "record_bytes": len(raw_record(event_type, 0)),
        }

        # paced
        if not with_paced:
            return out
        if deadline.remaining() < cfg.paced_seconds + cfg.paced_settle + 5:
            out["paced"] = {"skipped": "time budget exhausted"}
            return out
        settled = await settle(cfg)
        pstats = collector.expect(PACED, int(cfg.rate * cfg.paced_seconds))
        cpu = CpuMeter(pids)
        pfutures: list[asyncio.Future] = []

        async def send_batch(first: int, count: int) -> None:
            for i in range(first, first + count):
                pfutures.append(await send(PACED * PHASE_SPAN + i))

        pacing = await paced(cfg.rate, cfg.paced_seconds, send_batch, cfg.paced_max_batch, deadline)
        cpu_busy = cpu.result()
        await asyncio.wait_for(asyncio.gather(*pfutures), deadline.cap(60))
        pstats.expected = pacing["events"]
        if len(pstats.seen) >= pstats.expected:
            pstats.done.set()
        complete = await wait_phase(pstats, deadline.cap(cfg.drain_timeout), tasks)
        out["paced"] = {
            **pacing,
            "settled": settled,
            "events_received": len(pstats.seen),
            "complete": complete,
            "duplicates": pstats.duplicates,
            "latency": percentiles(collector.latencies(PACED)),
            "latency_by_second": collector.by_second(PACED),
            "cpu_cores_busy": cpu_busy,
        }
        return out
    finally:
        if child is not None:
            out["child_exit_code"] = await child.stop()
        await stop_tasks(stop, tasks if child is None else [])
        for client in (consumer, producer):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.stop(), 10)
            except Exception as exc:  # noqa: BLE001
                log.warning("raw client stop failed: %r", exc)


# -- the backbone -----------------------------------------------------------------------------


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
                    f"extract(epoch FROM s.handled_at)::float8 AS handled, "
                    f"extract(epoch FROM o.created_at)::float8 AS created "
                    f"FROM {SCHEMA}.side_effects s JOIN {SCHEMA}.outbox o USING (event_id) "
                    f"WHERE s.seq >= :lo AND s.seq < :hi"
                ),
                {"lo": lo, "hi": hi},
            )
        ).all()
    seen, extra = collector.phases[phase].seen, collector.phases[phase].extra
    to_relay, relay_to_handler, handler_to_visible = [], [], []
    claim_to_send, send_to_decode, decode_to_handler = [], [], []
    pubs, handles, created = [], [], []
    for seq, pub, handled, created_at in rows:
        if seq not in seen or pub is None:
            continue
        sent_at, visible = seen[seq]
        to_relay.append(pub - sent_at)
        relay_to_handler.append(handled - pub)
        handler_to_visible.append(visible - handled)
        pubs.append(pub)
        handles.append(handled)
        created.append(created_at)
        if seq in extra:
            produced, decoded = extra[seq]
            claim_to_send.append(produced - pub)
            send_to_decode.append(decoded - produced)
            decode_to_handler.append(handled - decoded)

    def rate(ts: list[float]) -> float | None:
        if len(ts) < 2 or max(ts) <= min(ts):
            return None
        return round(len(ts) / (max(ts) - min(ts)), 1)

    return {
        "emit_to_relay_claim": percentiles(to_relay),
        "relay_claim_to_handler": percentiles(relay_to_handler),
        "handler_to_commit_visible": percentiles(handler_to_visible),
        "detail": {
            "relay_claim_to_kafka_send": percentiles(claim_to_send),
            "kafka_send_to_consumer_decode": percentiles(send_to_decode),
            "consumer_decode_to_handler": percentiles(decode_to_handler),
            "note": "Kafka CreateTime has 1 ms resolution; decode = the consumer loop started on "
            "the record's batch",
        },
        "emit_transactions_events_per_s": rate(created),
        "relay_claim_events_per_s": rate(pubs),
        "relay_claims": len(set(pubs)),
        "handler_events_per_s": rate(handles),
    }


async def side_effect_counts(engine, phase: int) -> tuple[int, int]:  # noqa: ANN001
    async with engine.connect() as conn:
        effects, distinct = (
            await conn.execute(
                text(
                    f"SELECT count(*), count(DISTINCT seq) FROM {SCHEMA}.side_effects "
                    "WHERE seq >= :lo AND seq < :hi"
                ),
                {"lo": phase * PHASE_SPAN, "hi": (phase + 1) * PHASE_SPAN},
            )
        ).one()
    return effects, distinct


async def run_backbone(
    settings: BaseServiceSettings, event_type: str, cfg: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    """This process writes (like an API process); relay + consumer run in a child process."""
    engine = create_engine(settings)
    sessions = create_session_factory(engine, settings)
    collector = Collector()
    common_args = [
        "--mode", "backbone", "--event-type", event_type,
        "--group", f"{cfg.run_tag}-backbone",
        "--outbox-batch-size", str(settings.outbox_batch_size),
        "--outbox-poll-interval", str(settings.outbox_poll_interval_s),
        "--max-seconds", str(round(deadline.remaining() + 30)),
        "--handler", cfg.handler,
    ]
    profile = str(RESULTS_DIR / f"profile-{cfg.run_tag}-backbone")
    if cfg.child_layout == "one":
        child = ChildConsumer(
            "backbone",
            [*common_args, "--run", "relay,consumer",
             *(["--profile", f"{profile}.txt"] if cfg.profile_child else [])],
            collector,
        )
        children = [child]
    else:  # diagnostics: relay and consumer in two processes
        child = ChildConsumer(
            "backbone-consumer",
            [*common_args, "--run", "consumer",
             *(["--profile", f"{profile}-consumer.txt"] if cfg.profile_child else [])],
            collector,
        )
        relay_child = ChildConsumer(
            "backbone-relay",
            [*common_args, "--run", "relay",
             *(["--profile", f"{profile}-relay.txt"] if cfg.profile_child else [])],
            collector,
        )
        children = [child, relay_child]

    def timings(stats: PhaseStats) -> dict[str, Any]:
        t = child.timings(stats)
        if len(children) > 1:
            t["relay_batches"] = children[1].timings(stats)["relay_batches"]
        return t

    def all_tasks() -> list[asyncio.Task]:
        return [t for c in children for t in c.tasks]

    out: dict[str, Any] = {
        "topology": "writer in the bench process; OutboxRelay + EventConsumer in one child "
        "process (one event loop, like a service's worker)"
        if cfg.child_layout == "one"
        else "DIAGNOSTIC: writer in the bench process; OutboxRelay and EventConsumer in two "
        "child processes",
        "handler": cfg.handler,
        "topic": topic_for(event_type),
        "outbox_batch_size": settings.outbox_batch_size,
        "outbox_poll_interval_s": settings.outbox_poll_interval_s,
        "tx_size": cfg.tx_size,
    }

    async def emit_tx(first_seq: int, count: int, *, many: bool = True) -> None:
        async with sessions() as session, session.begin():
            if many:
                await emit_many(
                    session,
                    [
                        (BenchItem(seq=seq, sent_at=time.time(), body=BODY), str(seq))
                        for seq in range(first_seq, first_seq + count)
                    ],
                )
            else:
                for seq in range(first_seq, first_seq + count):
                    await emit(
                        session,
                        BenchItem(seq=seq, sent_at=time.time(), body=BODY),
                        subject=str(seq),
                    )

    def pids() -> dict[str, int | None]:
        if len(children) > 1:
            return {"bench_writer": os.getpid(), "consumer_child": child.pid,
                    "relay_child": children[1].pid, "kafka": cfg.kafka_pid}
        return {"bench_writer": os.getpid(), "relay_consumer_child": child.pid,
                "kafka": cfg.kafka_pid}

    async def throughput(phase: int, n: int, many: bool) -> dict[str, Any]:
        tasks = all_tasks()
        stats = collector.expect(phase, n)
        cpu = CpuMeter(pids())
        written = 0
        t0 = time.time()
        for first in range(0, n, cfg.tx_size):
            if deadline.expired():
                break
            count = min(cfg.tx_size, n - first)
            await emit_tx(phase * PHASE_SPAN + first, count, many=many)
            written += count
        t_emitted = time.time()
        complete = await wait_phase(stats, deadline.cap(cfg.phase_timeout), tasks)
        cpu_busy = cpu.result()
        handled = len(stats.seen)
        span = (stats.last_at or t0) - t0
        drained = complete
        if not complete:
            # Throughput is what was handled within the limit; let the rest drain (bounded) so
            # the side-effect check covers all N and the next phase does not start with a backlog.
            drained = await wait_phase(stats, deadline.cap(cfg.drain_timeout), tasks)
        effects, distinct = await side_effect_counts(engine, phase)
        transactions = stats.batches()
        return {
            "writer": "emit_many" if many else "emit (one call per event)",
            "events_emitted": written,
            "events_handled": handled,
            "complete": complete and written == n,
            "drained_after_limit": drained and not complete,
            "events_handled_after_drain": len(stats.seen),
            "duplicates": stats.duplicates,
            "seconds": round(span, 3),
            "events_per_s": round(handled / span, 1) if span > 0 else None,
            "emit_events_per_s": round(written / (t_emitted - t0), 1) if t_emitted > t0 else None,
            "consumer_transactions": transactions,
            "mean_events_per_consumer_transaction": round(len(stats.seen) / transactions, 1)
            if transactions
            else None,
            "side_effect_rows": effects,
            "side_effect_distinct": distinct,
            "side_effects_ok": effects == n and distinct == n
            if cfg.handler in ("insert", "batch")
            else None,
            "latency": percentiles(collector.latencies(phase)),
            "stages": await stage_breakdown(engine, collector, phase),
            "child_timings": timings(stats),
            "cpu_cores_busy": cpu_busy,
        }

    try:
        for c in children:
            await c.start(deadline.cap(45))
        tasks = all_tasks()
        warm = collector.expect(WARMUP, cfg.warmup)
        await emit_tx(WARMUP * PHASE_SPAN, cfg.warmup)
        if not await wait_phase(warm, deadline.cap(60), tasks):
            raise BenchError("backbone warm-up events were not handled within the time limit")

        out["throughput"] = await throughput(THROUGHPUT, cfg.events, many=True)
        async with engine.connect() as conn:
            out["throughput"]["record_bytes"] = await conn.scalar(
                text(f"SELECT avg(octet_length(envelope::text))::int FROM {SCHEMA}.outbox")
            )
        stats = collector.phases[THROUGHPUT]
        backlog = stats.expected - len(stats.seen)

        if cfg.emit_events:
            if deadline.remaining() < 20:
                out["throughput_emit_per_event"] = {"skipped": "time budget exhausted"}
            else:
                out["throughput_emit_per_event"] = await throughput(
                    THROUGHPUT_EMIT, cfg.emit_events, many=False
                )
                s = collector.phases[THROUGHPUT_EMIT]
                backlog += s.expected - len(s.seen)

        # paced
        if deadline.remaining() < cfg.paced_seconds + cfg.paced_settle + 5:
            out["paced"] = {"skipped": "time budget exhausted"}
            return out
        settled = await settle(cfg)
        pstats = collector.expect(PACED, int(cfg.rate * cfg.paced_seconds))
        cpu = CpuMeter(pids())

        async def send_batch(first: int, count: int) -> None:
            await emit_tx(PACED * PHASE_SPAN + first, count)

        pacing = await paced(cfg.rate, cfg.paced_seconds, send_batch, cfg.paced_max_batch, deadline)
        cpu_busy = cpu.result()
        pstats.expected = pacing["events"]
        if len(pstats.seen) >= pstats.expected:
            pstats.done.set()
        complete = await wait_phase(pstats, deadline.cap(cfg.drain_timeout), tasks)
        transactions = pstats.batches()
        out["paced"] = {
            **pacing,
            "settled": settled,
            "backlog_at_start": backlog,
            "events_handled": len(pstats.seen),
            "complete": complete,
            "duplicates": pstats.duplicates,
            "consumer_transactions": transactions,
            "mean_events_per_consumer_transaction": round(len(pstats.seen) / transactions, 2)
            if transactions
            else None,
            "latency": percentiles(collector.latencies(PACED)),
            "latency_by_second": collector.by_second(PACED),
            "stages": await stage_breakdown(engine, collector, PACED),
            "child_timings": timings(pstats),
            "cpu_cores_busy": cpu_busy,
        }
        async with engine.connect() as conn:
            total_effects = await conn.scalar(text(f"SELECT count(*) FROM {SCHEMA}.side_effects"))
            total_inbox = await conn.scalar(text(f"SELECT count(*) FROM {SCHEMA}.inbox"))
        out["totals"] = {
            "side_effect_rows": total_effects,
            "inbox_rows": total_inbox,
            "handled_callbacks": sum(len(p.seen) for p in collector.phases.values()),
            "unexpected": collector.unexpected,
        }
        return out
    finally:
        out["child_exit_code"] = [await c.stop() for c in children]
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


async def consumer_alone(
    settings: BaseServiceSettings,
    sessions,  # noqa: ANN001
    event_type: str,
    group: str,
    handler,  # noqa: ANN001
    m: int,
    deadline: Deadline,
) -> dict[str, Any]:
    """An EventConsumer in this process draining m events from the start of the topic."""
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
        settings, sessions, group, {event_type: handler}, on_committed=on_committed
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(consumer.run(stop), name=group)]
    try:
        complete = await wait_phase(stats, deadline.cap(45), tasks)
    finally:
        await stop_tasks(stop, tasks)
    arrivals = sorted(at for _, at in stats.seen.values())
    # The first transaction's events all arrive at one instant: count from there.
    first_batch = sum(1 for at in arrivals if at == arrivals[0]) if arrivals else 0
    span = arrivals[-1] - arrivals[0] if arrivals else 0.0
    return {
        "events_per_s": round((len(arrivals) - first_batch) / span, 1) if span > 0 else None,
        "complete": complete,
        "transactions": commits,
        "mean_events_per_transaction": round(len(arrivals) / commits, 1) if commits else None,
    }


async def run_isolated(
    settings: BaseServiceSettings, cfg: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    """Each backbone stage alone, in this process, on its own topic: emit with nothing else
    running, the relay draining that outbox backlog alone, then the consumer draining that topic
    alone (with the benchmark's side-effect handler, and with a handler that does nothing)."""
    m = cfg.isolated_events
    event_type = f"{cfg.run_tag}x.item.created.v1"
    register(event_type, IsolatedItem)
    await asyncio.wait_for(ensure_topics(settings, [topic_for(event_type)]), deadline.cap(30))
    engine = create_engine(settings)
    sessions = create_session_factory(engine, settings)
    out: dict[str, Any] = {"events": m, "topic": topic_for(event_type)}
    try:
        out["db"] = await db_round_trips(engine, sessions)

        base = ISOLATED * PHASE_SPAN
        for name, many in (("emit_many_alone_events_per_s", True), ("emit_alone_events_per_s", False)):
            t0 = time.perf_counter()
            for first in range(0, m, cfg.tx_size):
                async with sessions() as session, session.begin():
                    seqs = range(base + first, base + min(m, first + cfg.tx_size))
                    if many:
                        await emit_many(
                            session,
                            [(IsolatedItem(seq=s, sent_at=time.time(), body=BODY), str(s)) for s in seqs],
                        )
                    else:
                        for s in seqs:
                            await emit(
                                session,
                                IsolatedItem(seq=s, sent_at=time.time(), body=BODY),
                                subject=str(s),
                            )
            out[name] = round(m / (time.perf_counter() - t0), 1)
            base += PHASE_SPAN // 2  # the second batch gets seqs of its own (same phase)
        total = 2 * m

        # relay alone, draining that backlog (includes the producer start)
        unpublished = text(
            f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL AND event_type = :t"
        )
        stop = asyncio.Event()
        t0 = time.perf_counter()
        relay_task = asyncio.create_task(OutboxRelay(settings, sessions).run(stop), name="relay")
        left = total
        try:
            limit = time.monotonic() + deadline.cap(30)
            while left and time.monotonic() < limit and not relay_task.done():
                await asyncio.sleep(0.02)
                async with engine.connect() as conn:
                    left = await conn.scalar(unpublished, {"t": event_type})
            relay_s = time.perf_counter() - t0
        finally:
            await stop_tasks(stop, [relay_task])
        out["relay_alone_events_per_s"] = round((total - left) / relay_s, 1) if relay_s else None
        out["relay_alone_complete"] = left == 0

        for key, group, handler in (
            ("consumer_alone", f"{cfg.run_tag}-isolated", side_effect),
            ("consumer_alone_noop_handler", f"{cfg.run_tag}-isolated-noop", noop_handler),
        ):
            if deadline.remaining() < 10:
                out[key] = {"skipped": "time budget exhausted"}
                continue
            out[key] = await consumer_alone(
                settings, sessions, event_type, group, handler, total, deadline
            )
        out["events"] = total
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


def fmt_lat(lat: dict[str, Any] | None) -> str:
    if not lat or not lat.get("count"):
        return "n/a"
    return (
        f"p50 {lat['p50_ms']:.1f}  p95 {lat['p95_ms']:.1f}  p99 {lat['p99_ms']:.1f}  "
        f"max {lat['max_ms']:.1f} ms"
    )


def summarize_backbone(result: dict[str, Any]) -> list[str]:
    bb = result["scenarios"].get("backbone") or {}
    if not bb or "goals" not in bb:
        return ["  backbone: not run" + (f" ({bb.get('skipped')})" if bb.get("skipped") else "")]
    lines = ["  backbone (writer in this process, consumer side in a child process)"]
    raw, raw1, back = bb.get("raw", {}), bb.get("raw_same_process", {}), bb.get("backbone", {})
    rt, r1, bt = raw.get("throughput", {}), raw1.get("throughput", {}), back.get("throughput", {})
    be = back.get("throughput_emit_per_event", {})
    lines.append(
        f"    throughput raw (split)        {rt.get('events_per_s')} ev/s  "
        f"({rt.get('events_received')} events, {rt.get('record_bytes')} B)"
    )
    if r1:
        lines.append(f"    throughput raw (one process)  {r1.get('events_per_s')} ev/s")
    lines.append(
        f"    throughput backbone emit_many {bt.get('events_per_s')} ev/s  "
        f"({bt.get('events_handled')} events, writer {bt.get('emit_events_per_s')} ev/s, "
        f"{bt.get('mean_events_per_consumer_transaction')} ev/consumer tx)"
    )
    if be.get("events_per_s"):
        lines.append(
            f"    throughput backbone emit      {be.get('events_per_s')} ev/s  "
            f"({be.get('events_handled')} events, writer {be.get('emit_events_per_s')} ev/s)"
        )
    st = bt.get("stages") or {}
    if st:
        lines.append(
            f"      rates: writer tx {st.get('emit_transactions_events_per_s')}  relay claims "
            f"{st.get('relay_claim_events_per_s')}  handler {st.get('handler_events_per_s')} ev/s"
        )
    lines.append(
        f"    side effects {bt.get('side_effect_rows')}/{result['config']['events']} "
        f"(distinct {bt.get('side_effect_distinct')})"
    )
    rp, bp = raw.get("paced", {}), back.get("paced", {})
    rate = result["config"]["rate"]
    lines.append(f"    paced {rate:.0f}/s raw      ({rp.get('achieved_rate')} ev/s) {fmt_lat(rp.get('latency'))}")
    lines.append(f"    paced {rate:.0f}/s backbone ({bp.get('achieved_rate')} ev/s) {fmt_lat(bp.get('latency'))}")
    ps = bp.get("stages") or {}
    if ps:
        lines.append(
            "      stages p50/p99 ms: emit->relay claim "
            f"{ps['emit_to_relay_claim'].get('p50_ms')}/{ps['emit_to_relay_claim'].get('p99_ms')}, "
            "claim->handler "
            f"{ps['relay_claim_to_handler'].get('p50_ms')}/{ps['relay_claim_to_handler'].get('p99_ms')}, "
            "handler->commit "
            f"{ps['handler_to_commit_visible'].get('p50_ms')}/{ps['handler_to_commit_visible'].get('p99_ms')}"
        )
    if ps.get("detail", {}).get("relay_claim_to_kafka_send", {}).get("count"):
        d = ps["detail"]

        def pp(x: dict[str, Any]) -> str:
            return f"{x.get('p50_ms')}/{x.get('p99_ms')}"

        lines.append(
            f"      claim->handler in detail p50/p99 ms: claim->kafka send "
            f"{pp(d['relay_claim_to_kafka_send'])}, send->consumer decode "
            f"{pp(d['kafka_send_to_consumer_decode'])}, decode->handler "
            f"{pp(d['consumer_decode_to_handler'])}"
        )
    ct = bp.get("child_timings") or {}
    if ct.get("consumer_loop_iteration", {}).get("count"):

        def p50(node: dict[str, Any]) -> Any:
            return (node.get("seconds") or {}).get("p50_ms")

        it = ct["consumer_loop_iteration"]
        pb, rb = ct["consumer_partition_batches"], ct["relay_batches"]
        lines.append(
            f"      paced consumer loop: iteration p50/p99 {it['p50_ms']}/{it['p99_ms']} ms "
            f"(partition batch p50 {p50(pb)} ms for {pb.get('mean_rows')} rows, offset commit "
            f"p50 {p50(ct['consumer_offset_commits'])} ms); relay batch p50 {p50(rb)} ms for "
            f"{rb.get('mean_rows')} rows"
        )
    for label, node in (("raw paced", rp), ("backbone paced", bp), ("backbone throughput", bt)):
        c = node.get("cpu_cores_busy") or {}
        if c:
            parts = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("seconds", "cpus"))
            lines.append(f"      CPU cores busy, {label}: {parts} (of {c.get('cpus')})")
    goals = bb["goals"]
    lines.append(
        f"    goal ratio >= {GOAL_RATIO:.0%}: {goals['throughput_ratio']} "
        f"{'MET' if goals['throughput_goal_met'] else 'NOT MET'}  (vs one-process raw "
        f"{goals.get('throughput_ratio_vs_same_process_raw')}; per-event emit "
        f"{goals.get('throughput_ratio_emit_per_event')})"
    )
    lines.append(
        f"    goal p99 < {GOAL_P99_MS:.0f} ms at {rate:.0f}/s: {goals['paced_p99_ms']}  "
        f"{'MET' if goals['latency_goal_met'] else 'NOT MET'}"
    )
    iso = bb.get("isolated") or {}
    if iso.get("events"):
        db = iso.get("db", {})
        ca, cn = iso.get("consumer_alone") or {}, iso.get("consumer_alone_noop_handler") or {}
        lines.append(
            f"    stages alone ({iso['events']} events, one process): emit_many "
            f"{iso.get('emit_many_alone_events_per_s')}  emit {iso.get('emit_alone_events_per_s')}  "
            f"relay {iso.get('relay_alone_events_per_s')}  consumer {ca.get('events_per_s')} "
            f"(no-op handler {cn.get('events_per_s')}) ev/s"
        )
        lines.append(
            f"    db round trip p50 {db.get('sqlalchemy_session_select1', {}).get('p50_ms')} ms "
            f"(session), {db.get('asyncpg_select1', {}).get('p50_ms')} ms (asyncpg), durable "
            f"commit p50 {db.get('write_transaction_commit', {}).get('p50_ms')} ms"
        )
    dist = bb.get("disturbance") or {}
    if dist.get("disturbed"):
        lines.append(
            f"    WARNING: disturbed (restarted: {dist.get('restarted')}, client warnings: "
            f"{dist.get('client_log_counts')}); the figures may measure an outage"
        )
    if dist.get("warming_up"):
        lines.append(
            f"    WARNING: noisy: started shortly before the scenario, still warming up "
            f"(seconds since start): {dist['warming_up']}"
        )
    elif dist.get("noisy"):
        lines.append(
            f"    WARNING: noisy: processes outside the benchmark used up to "
            f"{dist.get('max_cores_used_outside_benchmark')} cores during a phase"
        )
    return lines


def summarize(result: dict[str, Any]) -> str:
    from auth_scenario import summarize_auth

    lines = [
        f"bench {result['run_id']}  ({result['machine']['nproc']} CPUs, Python "
        f"{result['machine']['python']}, {result.get('duration_s')} s)"
    ]
    if "backbone" in result["scenarios"]:
        lines += summarize_backbone(result)
    if "auth" in result["scenarios"]:
        lines += summarize_auth(result["scenarios"]["auth"])
    if "billing" in result["scenarios"]:
        from billing_scenario import summarize_billing

        lines += summarize_billing(result["scenarios"]["billing"])
    if "messaging" in result["scenarios"]:
        from messaging_scenario import summarize_messaging

        lines += summarize_messaging(result["scenarios"]["messaging"])
    if result.get("errors"):
        lines.append(f"  errors: {result['errors']}")
    if result.get("disturbed"):
        lines.append("  WARNING: the run was disturbed; re-run on a quiet stack")
    elif result.get("noisy"):
        lines.append("  WARNING: other processes competed for the CPUs; figures are pessimistic")
    return "\n".join(lines)


async def backbone_scenario(cfg: argparse.Namespace, result: dict[str, Any]) -> None:
    deadline = Deadline(cfg.backbone_budget)
    bb: dict[str, Any] = result["scenarios"]["backbone"]
    watch = Disturbance()
    cfg.kafka_pid = as_pid(watch.pids.get("kafka"))
    event_type = f"{cfg.run_tag}.item.created.v1"
    register(event_type, BenchItem)
    topic = topic_for(event_type)
    raw_topic, raw1_topic = f"{cfg.run_tag}.raw", f"{cfg.run_tag}.raw1"
    settings = make_settings(cfg.outbox_batch_size, cfg.outbox_poll_interval)

    await ensure_role_and_schema()
    engine = create_engine(settings)
    try:
        await prepare_tables(engine)
        pg_start = await postgres_started_at(engine)
    finally:
        await engine.dispose()
    await asyncio.wait_for(ensure_topics(settings, [topic]), deadline.cap(30))
    await asyncio.wait_for(
        ensure_topics(settings, [raw_topic, raw1_topic], with_dlq=False), deadline.cap(30)
    )
    try:
        try:
            bb["raw"] = await run_raw(
                settings, event_type, raw_topic, cfg, deadline, split=True, with_paced=True
            )
        except Exception as exc:  # noqa: BLE001
            log.exception("raw baseline (split) failed")
            result["errors"].append(f"raw: {exc!r}")
        if cfg.raw_same_process:
            try:
                bb["raw_same_process"] = await run_raw(
                    settings, event_type, raw1_topic, cfg, deadline, split=False, with_paced=False
                )
            except Exception as exc:  # noqa: BLE001
                log.exception("raw baseline (one process) failed")
                result["errors"].append(f"raw_same_process: {exc!r}")
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
            await remove_topics(settings, [raw_topic, raw1_topic, topic, iso_topic])

    def tp(*path: str) -> float | None:
        node: Any = bb
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, int | float) else None

    raw_tp = tp("raw", "throughput", "events_per_s")
    raw1_tp = tp("raw_same_process", "throughput", "events_per_s")
    back_tp = tp("backbone", "throughput", "events_per_s")
    emit_tp = tp("backbone", "throughput_emit_per_event", "events_per_s")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    paced_info = bb.get("backbone", {}).get("paced", {})
    p99 = (paced_info.get("latency") or {}).get("p99_ms")
    rate_ok = bool(paced_info.get("achieved_rate")) and paced_info["achieved_rate"] >= 0.95 * cfg.rate
    bt = bb.get("backbone", {}).get("throughput", {})
    be = bb.get("backbone", {}).get("throughput_emit_per_event", {})
    r = ratio(back_tp, raw_tp)
    bb["goals"] = {
        "throughput_ratio": r,
        "throughput_ratio_definition": "backbone (emit_many, split) / raw (split)",
        "throughput_ratio_goal": GOAL_RATIO,
        "throughput_goal_met": r is not None and r >= GOAL_RATIO and bool(bt.get("complete")),
        "throughput_ratio_vs_same_process_raw": ratio(back_tp, raw1_tp),
        "throughput_ratio_emit_per_event": ratio(emit_tp, raw_tp),
        "paced_p99_ms": p99,
        "paced_p99_goal_ms": GOAL_P99_MS,
        "paced_rate_achieved": rate_ok,
        "latency_goal_met": p99 is not None
        and p99 < GOAL_P99_MS
        and rate_ok
        and bool(paced_info.get("complete")),
        "side_effects_ok": cfg.handler == "noop"
        or (
            bool(bt.get("side_effects_ok"))
            and (not be or "skipped" in be or bool(be.get("side_effects_ok")))
        ),
    }
    engine = create_engine(settings)
    try:
        pg_restarted = await postgres_started_at(engine) != pg_start
    except Exception:  # noqa: BLE001
        pg_restarted = True
    finally:
        await engine.dispose()
    dist = watch.verdict()
    dist["postgres_restarted"] = pg_restarted
    dist["disturbed"] = dist["disturbed"] or pg_restarted
    bb["disturbance"] = dist
    bb["duration_s"] = round(cfg.backbone_budget - deadline.remaining(), 1)


async def billing_scenario(cfg: argparse.Namespace, result: dict[str, Any]) -> None:
    from billing_scenario import NOISY_FOREIGN_EVENTS, run_billing

    t0 = time.monotonic()
    watch = Disturbance()
    try:
        await ensure_role_and_schema()
        bl = await run_billing(cfg, Deadline(cfg.billing_budget), as_pid(watch.pids.get("kafka")))
    except Exception as exc:  # noqa: BLE001
        log.exception("billing scenario failed")
        result["errors"].append(f"billing: {exc!r}")
        bl = {"error": repr(exc)}
    result["errors"].extend(f"billing {e}" for e in bl.get("errors", []))
    dist = watch.verdict()
    ww = bl.get("worker_watch") or {}
    foreign = (bl.get("foreign_load") or {}).get("foreign_events_handled") or 0
    dist["disturbed"] = dist["disturbed"] or bool(ww.get("disturbed"))
    dist["noisy"] = dist["noisy"] or foreign > NOISY_FOREIGN_EVENTS
    dist["noisy_foreign_events_threshold"] = NOISY_FOREIGN_EVENTS
    bl["disturbance"] = dist
    bl["duration_s"] = round(time.monotonic() - t0, 1)
    result["scenarios"]["billing"] = bl


async def settle(cfg: argparse.Namespace) -> dict[str, Any] | None:
    """Before a paced phase: wait (at most --paced-settle seconds) until the machine is idle
    again, so that the aftermath of the throughput phase before it (autovacuum of tens of
    thousands of rows) cannot overlap it: the paced goal is the latency of a steady 1,000
    events/s, not of the aftermath of a burst."""
    return await wait_for_quiet(cfg.paced_settle) if cfg.paced_settle > 0 else None


async def wait_for_quiet(limit_s: float) -> dict[str, Any]:
    """Wait (bounded) until the machine is nearly idle: other people's tests or builds running
    next to the benchmark skew every figure. The run goes ahead either way."""
    t0 = time.monotonic()
    samples = []
    while True:
        meter = CpuMeter({})
        await asyncio.sleep(2.0)
        busy = meter.result().get("machine_busy")
        if CPU_LOG:
            CPU_LOG.pop()  # not a phase of the benchmark
        samples.append(busy)
        waited = time.monotonic() - t0
        if busy is None or busy < QUIET_CORES or waited >= limit_s:
            return {
                "waited_s": round(waited, 1),
                "machine_busy_samples": samples[-10:],
                "quiet": busy is not None and busy < QUIET_CORES,
                "quiet_threshold_cores": QUIET_CORES,
            }


async def watched_scenario(
    result: dict[str, Any], name: str, scenario: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    """Run a scenario into result["scenarios"][name], a failure kept as its error, with the
    Disturbance verdict over it (its budget starts after the stack's pids are read)."""
    watch = Disturbance()
    try:
        result["scenarios"][name] = await scenario()
    except Exception as exc:  # noqa: BLE001
        log.exception("%s scenario failed", name)
        result["errors"].append(f"{name}: {exc!r}")
        result["scenarios"][name] = {"error": repr(exc)}
    result["scenarios"][name]["disturbance"] = watch.verdict()


async def main_async(cfg: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    t_start = time.monotonic()
    cfg.run_tag = f"bench{started:%Y%m%d%H%M%S}{secrets.token_hex(2)}"
    result: dict[str, Any] = {
        "run_id": cfg.run_tag,
        "timestamp": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "scenarios": cfg.scenarios,
            "events": cfg.events,
            "emit_events": cfg.emit_events,
            "tx_size": cfg.tx_size,
            "rate": cfg.rate,
            "paced_seconds": cfg.paced_seconds,
            "paced_max_batch": cfg.paced_max_batch,
            "warmup": cfg.warmup,
            "outbox_batch_size": cfg.outbox_batch_size,
            "outbox_poll_interval_s": cfg.outbox_poll_interval,
            "child_layout": cfg.child_layout,
            "handler": cfg.handler,
            "kafka_bootstrap": make_settings().kafka_bootstrap,
            "backbone_budget_s": cfg.backbone_budget,
            "auth_budget_s": cfg.auth_budget,
            "wrk": {
                "threads": cfg.wrk_threads,
                "connections": cfg.wrk_connections,
                "seconds": cfg.wrk_seconds,
                "rounds": cfg.auth_rounds,
            },
            "login": {"concurrency": cfg.login_concurrency, "seconds": cfg.login_seconds},
            "billing": {
                "events": cfg.billing_events,
                "rates": cfg.billing_rates,
                "paced_seconds": cfg.billing_paced_seconds,
                "raw_events": cfg.billing_raw_events,
                "handler_events": cfg.billing_handler_events,
                "budget_s": cfg.billing_budget,
            },
        },
        "scenarios": {},
        "errors": [],
    }
    if cfg.quiet_wait > 0:
        result["quiet_wait"] = await wait_for_quiet(cfg.quiet_wait)
        if not result["quiet_wait"]["quiet"]:
            print(
                f"  the machine is busy ({result['quiet_wait']['machine_busy_samples'][-1]} cores "
                f"in use before the run); running anyway",
                file=sys.stderr,
            )
    if "backbone" in cfg.scenarios:
        result["scenarios"]["backbone"] = {}
        try:
            await backbone_scenario(cfg, result)
        except Exception as exc:  # noqa: BLE001
            log.exception("backbone scenario failed")
            result["errors"].append(f"backbone setup: {exc!r}")
    if "auth" in cfg.scenarios:
        from auth_scenario import run_auth

        await watched_scenario(result, "auth", lambda: run_auth(cfg, Deadline(cfg.auth_budget)))
    if "billing" in cfg.scenarios:
        await billing_scenario(cfg, result)
    if "messaging" in cfg.scenarios:
        from messaging_scenario import run_messaging

        await watched_scenario(
            result, "messaging", lambda: run_messaging(cfg, Deadline(cfg.messaging_budget))
        )
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    return result


def write_results(result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / ".gitkeep").touch(exist_ok=True)
    stamp = datetime.fromisoformat(result["timestamp"]).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    body = json.dumps(result, indent=2, sort_keys=False, default=str) + "\n"
    path.write_text(body)
    (RESULTS_DIR / "latest.json").write_text(body)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated: {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--only", choices=SCENARIOS, help="run this one scenario (overrides --scenarios)"
    )
    g = p.add_argument_group("messaging")
    g.add_argument("--messaging-budget", type=float, default=240.0, help="seconds for the messaging scenario")
    g.add_argument("--messaging-bulk", type=int, default=10_000, help="recipients of the bulk send")
    g = p.add_argument_group("backbone")
    g.add_argument("--events", type=int, default=20_000, help="events per throughput run")
    g.add_argument(
        "--emit-events",
        type=int,
        default=10_000,
        help="events for the per-event emit() throughput variant; 0: skip it",
    )
    g.add_argument("--tx-size", type=int, default=100, help="events per emit transaction")
    g.add_argument("--rate", type=float, default=1000.0, help="paced run: events/s")
    g.add_argument("--paced-seconds", type=float, default=10.0)
    g.add_argument("--paced-max-batch", type=int, default=50, help="paced run: max events per send")
    g.add_argument(
        "--paced-settle",
        type=float,
        default=10.0,
        help="before each paced run, wait up to this many seconds for the machine to be idle "
        "after the throughput run before it; 0: do not wait",
    )
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--outbox-batch-size", type=int, default=500, help="settings.outbox_batch_size")
    g.add_argument(
        "--outbox-poll-interval", type=float, default=1.0, help="settings.outbox_poll_interval_s"
    )
    g.add_argument(
        "--no-raw-same-process",
        dest="raw_same_process",
        action="store_false",
        help="skip the one-process raw throughput figure",
    )
    g.add_argument(
        "--phase-timeout", type=float, default=60.0, help="max wait for one throughput run"
    )
    g.add_argument(
        "--drain-timeout", type=float, default=20.0, help="max wait for a backlog to drain"
    )
    g.add_argument(
        "--isolated-events",
        type=int,
        default=2000,
        help="events for the per-stage diagnostics (emit / relay / consumer alone); 0: skip",
    )
    g.add_argument("--backbone-budget", type=float, default=120.0, help="seconds")
    g.add_argument("--keep-topics", action="store_true", help="do not delete this run's topics")
    g.add_argument(
        "--child-layout",
        choices=["one", "two"],
        default="one",
        help="diagnostics: 'two' runs the relay and the consumer in separate child processes",
    )
    g.add_argument("--handler", choices=HANDLERS, default=HANDLERS[0], help=HANDLER_HELP)
    g.add_argument(
        "--profile-child",
        action="store_true",
        help="cProfile the relay+consumer child; summary in bench/results/profile-<run>-backbone.txt"
        " (slows the child down: diagnostics only)",
    )
    a = p.add_argument_group("auth")
    a.add_argument("--wrk-seconds", type=int, default=8, help="duration of each wrk run")
    a.add_argument("--wrk-threads", type=int, default=2)
    a.add_argument("--wrk-connections", type=int, default=32)
    a.add_argument("--auth-rounds", type=int, default=2, help="bare/auth pairs, interleaved")
    a.add_argument(
        "--login-concurrency", default="4,8", help="comma-separated concurrent login levels"
    )
    a.add_argument("--login-seconds", type=float, default=8.0, help="per concurrency level")
    a.add_argument("--auth-budget", type=float, default=100.0, help="seconds")
    b = p.add_argument_group("billing")
    b.add_argument(
        "--billing-events", type=int, default=5000, help="hold requests in the throughput run"
    )
    b.add_argument(
        "--billing-rate",
        default="50,100",
        help="paced runs: requests/s, comma-separated, one run each (see bench/README.md)",
    )
    b.add_argument("--billing-paced-seconds", type=float, default=10.0)
    b.add_argument(
        "--billing-raw-events",
        type=int,
        default=2000,
        help="raw asyncpg baseline: events per variant (1 writer, 3 writers; at most 8 s each)",
    )
    b.add_argument(
        "--billing-handler-events",
        type=int,
        default=300,
        help="diagnostics: holds for the in-process handler-alone run (rolled back); 0: skip",
    )
    b.add_argument("--billing-budget", type=float, default=100.0, help="seconds")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help=f"wait up to this many seconds for the machine to be idle (< {QUIET_CORES} cores "
        "busy) before starting; 0: do not wait",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    cfg = p.parse_args(argv)
    cfg.scenarios = [s.strip() for s in cfg.scenarios.split(",") if s.strip()]
    if cfg.only:
        cfg.scenarios = [cfg.only]
    if not set(cfg.scenarios) <= set(SCENARIOS) or not cfg.scenarios:
        p.error(f"--scenarios: any of {', '.join(SCENARIOS)}")
    cfg.billing_rates = [float(r) for r in str(cfg.billing_rate).split(",") if r.strip()]
    if not 1 <= cfg.billing_events <= 50_000 or any(not 0 < r <= 5000 for r in cfg.billing_rates):
        p.error("--billing-events in 1..50000, --billing-rate values in (0, 5000]")
    if not 0 < cfg.billing_paced_seconds <= 60 or not 1 <= cfg.billing_raw_events <= 50_000:
        p.error("--billing-paced-seconds in (0, 60], --billing-raw-events in 1..50000")
    if not 0 <= cfg.billing_handler_events <= 5000:
        p.error("--billing-handler-events in 0..5000")
    cfg.login_concurrency = [int(c) for c in str(cfg.login_concurrency).split(",") if c.strip()]
    if not 0 < cfg.events < PHASE_SPAN or not 0 < cfg.rate * cfg.paced_seconds < PHASE_SPAN:
        p.error(f"--events and --rate*--paced-seconds must be in 1..{PHASE_SPAN - 1}")
    if not 0 <= cfg.emit_events < PHASE_SPAN or not 0 <= cfg.isolated_events < PHASE_SPAN // 2:
        p.error("--emit-events / --isolated-events out of range")
    if cfg.tx_size < 1 or cfg.paced_max_batch < 1 or cfg.warmup < 1:
        p.error("--tx-size, --paced-max-batch and --warmup must be >= 1")
    if not 1 <= cfg.wrk_seconds <= 60 or not 1 <= cfg.auth_rounds <= 5:
        p.error("--wrk-seconds in 1..60, --auth-rounds in 1..5")
    if any(not 1 <= c <= 64 for c in cfg.login_concurrency) or not 0 < cfg.login_seconds <= 60:
        p.error("--login-concurrency levels in 1..64, --login-seconds in (0, 60]")
    return cfg


def main(argv: list[str] | None = None) -> int:
    global LOG_COUNTER
    LOG_COUNTER = install_log_counter()
    cfg = parse_args(argv)
    result = run_event_loop(main_async(cfg))
    result["client_log"] = {"counts": LOG_COUNTER.counts, "first": LOG_COUNTER.first}
    result["disturbed"] = any(
        (s.get("disturbance") or {}).get("disturbed") for s in result["scenarios"].values()
    )
    result["noisy"] = any(
        (s.get("disturbance") or {}).get("noisy") for s in result["scenarios"].values()
    )
    path = write_results(result)
    print(summarize(result))
    print(f"  results: {path.relative_to(ROOT)} (and bench/results/latest.json)")
    bad = bool(result["errors"])
    goals_met = True
    bb = result["scenarios"].get("backbone")
    if bb is not None:
        goals = bb.get("goals") or {}
        bad = bad or not goals.get("side_effects_ok")
        goals_met = goals_met and bool(goals.get("throughput_goal_met")) and bool(
            goals.get("latency_goal_met")
        )
    au = result["scenarios"].get("auth")
    if au is not None:
        goals_met = goals_met and bool((au.get("goals") or {}).get("hot_path_goal_met"))
    bl = result["scenarios"].get("billing")
    if bl is not None:
        billing_goals = bl.get("goals") or {}
        bad = bad or not billing_goals.get("invariants_ok")
        goals_met = goals_met and bool(billing_goals.get("goal_met"))
    ms = result["scenarios"].get("messaging")
    if ms is not None:
        goals = ms.get("goals") or {}
        goals_met = goals_met and bool(goals.get("accept_goal_met")) and bool(goals.get("bulk_goal_met"))
    if bad:
        return 2
    if cfg.strict and not goals_met:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
