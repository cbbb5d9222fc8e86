"""What bench/run.py and its child processes (bench/worker_proc.py) share: the payload, the
settings, the side-effect handler, the wire format of the child's reports, and log counting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
from common.contracts.base import Payload
from common.settings import BaseServiceSettings
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PG_SOCKET_DIR = ROOT / ".local" / "pg" / "run"

HOST = "127.0.0.1"  # the only host the benchmark ever talks to
PG_PORT = 55432
KAFKA_PORT = 59092
DATABASE = "switchboard"
SCHEMA = "bench"  # also the role name and password

# seq = phase * PHASE_SPAN + i, so one consumer can tell the phases apart.
PHASE_SPAN = 1_000_000
THROUGHPUT, PACED, WARMUP, ISOLATED, THROUGHPUT_EMIT = 0, 1, 2, 3, 4


class BenchItem(Payload):
    seq: int
    sent_at: float  # time.time() when the event was emitted / sent
    body: str


class IsolatedItem(BenchItem):
    """The same payload under a second contract (its own topic) for the per-stage diagnostics."""


BODY = "x" * 200


def make_settings(outbox_batch_size: int = 500, outbox_poll_interval_s: float = 1.0) -> BaseServiceSettings:
    return BaseServiceSettings(
        service_name=SCHEMA,
        database_url=f"postgresql+asyncpg://{SCHEMA}:{SCHEMA}@{HOST}:{PG_PORT}/{DATABASE}",
        db_schema=SCHEMA,
        kafka_bootstrap=f"{HOST}:{KAFKA_PORT}",
        kafka_session_timeout_ms=6000,
        outbox_batch_size=outbox_batch_size,
        outbox_poll_interval_s=outbox_poll_interval_s,
        log_level="WARNING",
    )


# The handler's side effect, in the session it is given (kept exactly once with the inbox row).
# handled_at = clock_timestamp(): when the handler ran, for the per-stage breakdown.
_EFFECT = text(
    f"INSERT INTO {SCHEMA}.side_effects (seq, event_id, sent_at) VALUES (:s, :i, :t)"
)


async def side_effect(session, envelope) -> None:  # noqa: ANN001
    await session.execute(
        _EFFECT, {"s": envelope.data.seq, "i": envelope.id, "t": envelope.data.sent_at}
    )


_EFFECTS = text(
    f"INSERT INTO {SCHEMA}.side_effects (seq, event_id, sent_at) "
    "SELECT * FROM unnest(CAST(:s AS int[]), CAST(:i AS text[]), CAST(:t AS float8[]))"
)


async def side_effects(session, envelopes) -> None:  # noqa: ANN001
    """The same side effect as a batch handler (`--handler batch`): one statement per run of
    events, as hot paths in the services do (billing's holds, messaging's billing replies)."""
    await session.execute(
        _EFFECTS,
        {"s": [e.data.seq for e in envelopes], "i": [e.id for e in envelopes],
         "t": [e.data.sent_at for e in envelopes]},
    )


async def noop_handler(session, envelope) -> None:  # noqa: ANN001
    """Diagnostics (`--handler noop`): the consumer's own cost, without the side effect."""
    return None


# `--handler` of bench/run.py, passed on to bench/worker_proc.py; the first is the default.
HANDLERS = ("batch", "insert", "noop")
HANDLER_HELP = (
    "'batch' (default): the side-effect rows from a batch handler, one statement per run of "
    "events; 'insert': one side-effect row per handler call; diagnostics: 'noop' (no "
    "side-effect row; no stage breakdown, no check)"
)


async def raw_fetch(consumer) -> tuple[float, list[tuple[int, float]]]:  # noqa: ANN001
    """One fetch of the raw baseline's consumer, the same in the child (worker_proc.py) and in
    the one-process run: when it returned, and the (seq, sent_at) of its records."""
    batches = await consumer.getmany(timeout_ms=100, max_records=500)
    now = time.time()
    seen = []
    for records in batches.values():
        for record in records:
            data = json.loads(record.value)["data"]
            seen.append((data["seq"], data["sentAt"]))
    return now, seen


# -- figures and pacing (used by every scenario) -------------------------------------------


class Deadline:
    """A time budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def cap(self, seconds: float) -> float:
        return min(seconds, self.remaining())

    def expired(self) -> bool:
        return self.remaining() <= 0


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


def latency_by_second(
    samples: Iterable[tuple[float, float]], t0: float
) -> list[dict[str, float | int | None]]:
    """Latency per second of a phase, by send time, from (sent, arrived) pairs (time.time(), t0
    the phase's start): is the tail one stall or spread?"""
    buckets: dict[int, list[float]] = {}
    for sent, arrived in samples:
        buckets.setdefault(int(sent - t0), []).append(arrived - sent)
    out = []
    for second in sorted(buckets):
        p = percentiles(buckets[second])
        out.append(
            {"second": second, "count": p["count"], "p50_ms": p["p50_ms"],
             "p99_ms": p["p99_ms"], "max_ms": p["max_ms"]}
        )
    return out


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
            # At least 1 ms: uvloop rounds a timer to whole milliseconds, so a shorter sleep
            # returns at once and the loop spun until its iteration cap cut the phase short.
            await asyncio.sleep(max(0.001, t0 + sent / rate - now))
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


# -- the child's reports: one JSON array per line on its stdout -------------------------------
#   ["READY"]                                 the consumer (and relay) tasks are running
#   ["H", at, [[seq, sent_at(, produced_at, decoded_at)], ...]]
#                          these events became visible at `at` (time.time()); backbone adds the
#                          Kafka record's CreateTime and when the consumer decoded the record
#   ["R", at, rows, seconds]     the relay published a batch (publish_batch took `seconds`)
#   ["P", at, records, seconds]  the consumer settled one partition's batch
#   ["F", at, records, seconds]  the consumer's getmany returned records after waiting `seconds`
#   ["C", at, 0, seconds]        the consumer's offset commit took `seconds`
#   ["LOG", {"logger:LEVEL": count}, [first lines]]   the child's warnings/errors, at exit


# Reports are buffered and written at most every REPORT_FLUSH_S (by `flush_reports_every`), not
# one pipe write per report: at 1,000 events/s the child sent about 1,100 lines a second, each a
# write that woke the bench process on a 2-CPU machine already near saturation. The timestamps
# inside the reports are taken when the event happens, so buffering delays only when the bench
# process learns of them, not what it measures. READY and LOG go out at once.
REPORT_FLUSH_S = 0.05
_pending_reports: list[str] = []


def report(*message: Any) -> None:
    _pending_reports.append(json.dumps(message, separators=(",", ":")))
    if message[0] in ("READY", "LOG"):
        flush_reports()


def flush_reports() -> None:
    if _pending_reports:
        sys.stdout.write("\n".join(_pending_reports) + "\n")
        sys.stdout.flush()
        _pending_reports.clear()


async def flush_reports_every(stop: asyncio.Event, interval: float = REPORT_FLUSH_S) -> None:
    """The child's flusher task: buffered reports out every `interval`, and the rest at stop."""
    try:
        while not stop.is_set():
            flush_reports()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        flush_reports()


class ClientLogCounter(logging.Handler):
    """Counts warnings/errors of the Kafka client and the backbone, shows only the first few.

    A broker restart or a rebalance during a run shows up here (and in the JSON): such a run
    measures the outage, not the backbone.
    """

    def __init__(self, show: int = 3, prefix: str = "") -> None:
        super().__init__(level=logging.WARNING)
        self.show = show  # lines kept (and printed) per logger and level
        self.prefix = prefix
        self.counts: dict[str, int] = {}
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}:{record.levelname}"
        self.add(key, 1)
        if self.counts[key] <= self.show and len(self.first) < 30:
            line = f"{self.prefix}{record.levelname} {record.name}: {record.getMessage()}"[:300]
            if record.exc_info and record.exc_info[1] is not None:
                line += f" [{record.exc_info[1]!r}]"[:200]
            self.first.append(line)
            print(f"  [log] {line}", file=sys.stderr)

    def add(self, key: str, count: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + count

    def merge(self, counts: dict[str, int], first: list[str]) -> None:
        """Fold in a child process's counts (same keys, so `disturbed` sees them)."""
        for key, count in counts.items():
            self.add(key, count)
        self.first.extend(first[: max(0, 30 - len(self.first))])

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def install_log_counter(prefix: str = "") -> ClientLogCounter:
    counter = ClientLogCounter(prefix=prefix)
    root = logging.getLogger()
    root.handlers[:] = [counter]
    root.setLevel(logging.WARNING)
    return counter


def is_client_problem(key: str) -> bool:
    """A warning/error of the Kafka client or the backbone: the run saw an outage or rebalance."""
    return key.startswith(("aiokafka", "common"))


_STATUS_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(?:pid (\d+))?")
WATCHED = ("kafka", "postgres", "redis", "auth-api", "billing-api")


def stack_pids(names: tuple[str, ...] = WATCHED) -> dict[str, str]:
    """The supervisor's view of the stack (`devstack.py status`): a changed pid is a restart."""
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "devstack.py"), "status"],
            capture_output=True,
            text=True,
            timeout=15,
            cwd=str(ROOT),
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": repr(exc)}
    pids = {}
    for line in out.splitlines():
        m = _STATUS_LINE.match(line.strip())
        if m and m.group(1) in names:
            pids[m.group(1)] = m.group(3) or m.group(2)
    return pids


def as_pid(value: str | None) -> int | None:
    """A pid from stack_pids() (which gives the status instead when there is none)."""
    return int(value) if value and value.isdigit() else None


def service_pid(name: str) -> int | None:
    """The pid of one program of the stack (`devstack.py status`), None when it is not running."""
    return as_pid(stack_pids((name,)).get(name))


async def superuser(timeout: float = 10) -> asyncpg.Connection:
    """The local superuser over the unix socket: one-off setup and read-only cross-checks."""
    return await asyncpg.connect(
        host=str(PG_SOCKET_DIR), port=PG_PORT, user="postgres", database=DATABASE, timeout=timeout
    )


# -- CPU accounting (Linux /proc) -------------------------------------------------------------


def _stat_ticks(pid: int | str | None, *fields: int) -> list[int] | None:
    """Fields of /proc/<pid>/stat after the command name (0 = state), as ints; None when the
    process is gone or unreadable."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            values = f.read().rsplit(")", 1)[1].split()
        return [int(values[i]) for i in fields]
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), from /proc."""
    ticks = _stat_ticks(pid, 11, 12)
    return None if ticks is None else sum(ticks) / os.sysconf("SC_CLK_TCK")


def process_age_s(pid: int | str | None) -> float | None:
    """Seconds since process `pid` started (from /proc), None when it cannot be read."""
    ticks = _stat_ticks(pid, 19)
    if ticks is None:
        return None
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return round(uptime - ticks[0] / os.sysconf("SC_CLK_TCK"), 1)


def _postgres_pids(roles: tuple[str, ...] = (SCHEMA,)) -> dict[int, str]:
    """PostgreSQL's processes by kind: the backends of `roles` (postgres_<role>), other roles'
    backends (the services, other people's tests), and the server's own (WAL writer, ...)."""
    pids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        kind = "postgres_server"
        if len(title) >= 4 and title[0] == "postgres:" and "(" in title[3]:
            kind = f"postgres_{title[1]}" if title[1] in roles else "postgres_other_roles"
        pids[int(entry)] = kind
    return pids


def _machine_ticks() -> dict[str, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return {
        "busy": user + nice + system + irq + softirq,
        "idle": idle + iowait,
        "irq": irq + softirq,
        "steal": steal,
    }


# Every CpuMeter result, in order: the Disturbance check looks for noisy neighbours in them.
CPU_LOG: list[dict[str, Any]] = []
# Cores that processes outside the benchmark (the idle stack: ~0.1) may use before a phase
# counts as noisy: someone else's tests or builds were competing for the CPUs.
NOISY_OTHER_CORES = 0.3
# A JVM (Kafka) started this recently is still compiling its hot paths: in session 6 a run
# started right after `make test` (whose backbone test restarts Kafka) saw the broker at 1.05
# cores and a paced p99 of 475 ms, against 50-110 ms once it had run a few minutes.
WARM_UP_S = 300.0


class CpuMeter:
    """CPU cores busy during a phase: named processes, PostgreSQL by kind, interrupts, and
    `other_processes`: whatever else ran (the idle services, other people's tests)."""

    def __init__(self, pids: dict[str, int | None], pg_roles: tuple[str, ...] = (SCHEMA,)) -> None:
        self.pids = {k: v for k, v in pids.items() if v}
        self.pg_roles = pg_roles
        try:
            self.t0 = time.monotonic()
            self.m0 = _machine_ticks()
            self.p0 = {k: cpu_seconds(v) for k, v in self.pids.items()}
            self.pg0 = {pid: cpu_seconds(pid) or 0.0 for pid in _postgres_pids(self.pg_roles)}
            self.ok = True
        except OSError:
            self.ok = False

    def result(self, extra_cpu_s: dict[str, float] | None = None) -> dict[str, Any]:
        """extra_cpu_s: CPU seconds of processes that exited meanwhile (e.g. from rusage)."""
        if not self.ok:
            return {}
        try:
            wall = time.monotonic() - self.t0
            m1 = _machine_ticks()
            tick = os.sysconf("SC_CLK_TCK")
            out: dict[str, Any] = {"seconds": round(wall, 2), "cpus": os.cpu_count()}
            if wall <= 0:
                return out
            known = 0.0
            for name, used in (extra_cpu_s or {}).items():
                out[name] = round(used / wall, 2)
                known += used
            for name, pid in self.pids.items():
                c0, c1 = self.p0.get(name), cpu_seconds(pid)
                if c0 is not None and c1 is not None:
                    out[name] = round((c1 - c0) / wall, 2)
                    known += c1 - c0
            pg: dict[str, float] = {}
            for pid, kind in _postgres_pids(self.pg_roles).items():
                used = (cpu_seconds(pid) or 0.0) - self.pg0.get(pid, 0.0)
                pg[kind] = pg.get(kind, 0.0) + used
                known += used
            kinds = [f"postgres_{r}" for r in self.pg_roles]
            for kind in (*kinds, "postgres_server", "postgres_other_roles"):
                out[kind] = round(pg.get(kind, 0.0) / wall, 2)
            busy = (m1["busy"] - self.m0["busy"]) / tick
            irq = (m1["irq"] - self.m0["irq"]) / tick
            out["irq_softirq"] = round(irq / wall, 2)
            out["other_processes"] = round(max(0.0, busy - irq - known) / wall, 2)
            out["machine_busy"] = round(busy / wall, 2)
            out["steal"] = round((m1["steal"] - self.m0["steal"]) / tick / wall, 2)
            out["outside_benchmark"] = round(out["other_processes"] + out["postgres_other_roles"], 2)
            CPU_LOG.append(out)
            return out
        except OSError:
            return {}
