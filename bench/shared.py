"""What bench/run.py and its child processes (bench/worker_proc.py) share: the payload, the
settings, the side-effect handler, the wire format of the child's reports, and log counting."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

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


# -- the child's reports: one JSON array per line on its stdout -------------------------------
#   ["READY"]                                 the consumer (and relay) tasks are running
#   ["H", at, [[seq, sent_at], ...]]          these events became visible at `at` (time.time())
#   ["LOG", {"logger:LEVEL": count}, [first lines]]   the child's warnings/errors, at exit


def report(*message: Any) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


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
