"""The consuming side of the benchmark, in its own OS process (started by bench/run.py).

  --mode backbone   an OutboxRelay and an EventConsumer in one event loop, as in a service's
                    worker process (common.messaging.worker); the handler inserts a
                    bench.side_effects row in the session it is given.
  --mode raw        a plain aiokafka consumer (make_consumer): getmany, commit after each batch.

It reports on stdout, one JSON array per line (see bench/shared.py): READY once its tasks run,
then for every committed consumer transaction (backbone) or fetched batch (raw) the time and the
(seq, sent_at, ...) of its events, per-batch timings of the relay and the consumer (backbone),
and at exit its warning/error counts. It stops when its stdin
closes, on SIGTERM/SIGINT, or after --max-seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import threading
import time

from common.contracts.registry import register
from common.db import create_engine, create_session_factory
from common.messaging.consumer import EventConsumer
from common.messaging.kafka import make_consumer
from common.messaging.relay import OutboxRelay
from common.runtime import freeze_startup_heap
from common.runtime import run as run_event_loop
from shared import (
    HANDLER_HELP,
    HANDLERS,
    BenchItem,
    flush_reports_every,
    install_log_counter,
    make_settings,
    noop_handler,
    raw_fetch,
    report,
    side_effect,
    side_effects,
)


def watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A daemon thread: the parent closing our stdin (or dying) stops us."""

    def wait_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()


async def run_raw(cfg: argparse.Namespace, stop: asyncio.Event, hard_end: float) -> None:
    settings = make_settings()
    consumer = make_consumer(settings, cfg.group, cfg.topic)
    await asyncio.wait_for(consumer.start(), 30)
    freeze_startup_heap()  # the same process set-up as the backbone's child
    report("READY")
    try:
        while not stop.is_set() and time.monotonic() < hard_end:
            now, seen = await raw_fetch(consumer)
            if seen:
                report("H", now, seen)
                await consumer.commit()
    finally:
        await asyncio.wait_for(consumer.stop(), 10)


class TimedRelay(OutboxRelay):
    """The library's relay, reporting each published batch: ["R", at, rows, seconds]."""

    async def publish_batch(self) -> int:
        t = time.perf_counter()
        n = await super().publish_batch()
        if n:
            report("R", time.time(), n, round(time.perf_counter() - t, 6))
        return n


class TimedConsumer(EventConsumer):
    """The library's consumer, unchanged in behaviour; for the per-stage breakdown it notes
    each record's Kafka timestamp (CreateTime: the relay's send) and when the consumer loop
    started on its batch, and reports each partition batch: ["P", at, records, seconds].
    These hooks use private methods; if the library renames them, the breakdown is shorter."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.meta: dict[str, tuple[float, float]] = {}

    def _decode(self, record):  # noqa: ANN001, ANN202
        item = super()._decode(record)
        if item.envelope is not None:
            self.meta[item.envelope.id] = (record.timestamp / 1000.0, time.time())
        return item

    async def _process_partition(self, tp, records, stop):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        try:
            return await super()._process_partition(tp, records, stop)
        finally:
            report("P", time.time(), len(records), round(time.perf_counter() - t, 6))


def time_kafka_calls() -> None:
    """Diagnostics: wrap the EventConsumer's Kafka consumer (built by make_consumer inside
    EventConsumer.run) so each fetch and offset commit is reported:
    ["F", at, records, seconds waited in getmany] and ["C", at, seconds the commit took]."""
    import common.messaging.consumer as consumer_module

    real_make_consumer = consumer_module.make_consumer

    def make_timed_consumer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        kafka_consumer = real_make_consumer(*args, **kwargs)
        getmany, commit = kafka_consumer.getmany, kafka_consumer.commit

        async def timed_getmany(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            batches = await getmany(*a, **kw)
            n = sum(len(r) for r in batches.values())
            if n:
                report("F", time.time(), n, round(time.perf_counter() - t, 6))
            return batches

        async def timed_commit(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return await commit(*a, **kw)
            finally:
                report("C", time.time(), 0, round(time.perf_counter() - t, 6))

        kafka_consumer.getmany = timed_getmany
        kafka_consumer.commit = timed_commit
        return kafka_consumer

    consumer_module.make_consumer = make_timed_consumer


async def run_backbone(cfg: argparse.Namespace, stop: asyncio.Event, hard_end: float) -> None:
    settings = make_settings(cfg.outbox_batch_size, cfg.outbox_poll_interval)
    register(cfg.event_type, BenchItem)
    time_kafka_calls()
    engine = create_engine(settings)
    sessions = create_session_factory(engine, settings)
    consumer: TimedConsumer

    def on_committed(handled) -> None:  # noqa: ANN001
        now = time.time()
        rows = []
        for e in handled:
            produced, decoded = consumer.meta.pop(e.id, (None, None))
            rows.append((e.data.seq, e.data.sent_at, produced, decoded))
        report("H", now, rows)

    if cfg.handler == "batch":
        consumer = TimedConsumer(
            settings, sessions, cfg.group, {}, batch_handlers={cfg.event_type: side_effects},
            on_committed=on_committed,
        )
    else:
        handler = side_effect if cfg.handler == "insert" else noop_handler
        consumer = TimedConsumer(
            settings, sessions, cfg.group, {cfg.event_type: handler}, on_committed=on_committed
        )
    tasks = []
    if "relay" in cfg.run:
        relay = TimedRelay(settings, sessions)
        tasks.append(asyncio.create_task(relay.run(stop), name="outbox-relay"))
    if "consumer" in cfg.run:
        tasks.append(asyncio.create_task(consumer.run(stop), name="event-consumer"))
    stopper = asyncio.create_task(stop.wait())
    freeze_startup_heap()  # as common.messaging.worker does in a service's worker
    watch_gc_pauses()
    lag = asyncio.create_task(watch_loop_lag())
    report("READY")
    try:
        done, _ = await asyncio.wait(
            [*tasks, stopper],
            timeout=max(0.0, hard_end - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        stopper.cancel()
        lag.cancel()
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()


def watch_gc_pauses(threshold_s: float = 0.01) -> None:
    """Diagnostics: every garbage collection that stops this process for 10 ms or more goes to
    stderr (the bench's log), with its generation and what it collected."""
    started: list[float] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            took = time.perf_counter() - started[0]
            if took >= threshold_s:
                print(
                    f"child gc: generation {info['generation']} took {took * 1000:.1f} ms "
                    f"(collected {info['collected']}) at {time.time():.3f}",
                    file=sys.stderr,
                    flush=True,
                )

    gc.callbacks.append(callback)


async def watch_loop_lag(threshold_s: float = 0.05) -> None:
    """Diagnostics: a 10 ms sleep that returns 50 ms or more late means the event loop (or the
    whole process) stood still: to stderr, to tell such a stall from a slow database or broker."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        late = time.perf_counter() - t0 - 0.01
        if late >= threshold_s:
            print(f"child loop: {late * 1000:.0f} ms late at {time.time():.3f}", file=sys.stderr, flush=True)


async def main_async(cfg: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_stdin(loop, stop)
    hard_end = time.monotonic() + cfg.max_seconds
    flushing = asyncio.Event()
    flusher = asyncio.create_task(flush_reports_every(flushing), name="report-flush")
    try:
        if cfg.mode == "raw":
            await run_raw(cfg, stop, hard_end)
        else:
            await run_backbone(cfg, stop, hard_end)
    finally:
        flushing.set()
        await flusher


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=["raw", "backbone"], required=True)
    p.add_argument("--topic", help="raw: the topic to read")
    p.add_argument("--event-type", help="backbone: the event type to handle")
    p.add_argument("--group", required=True)
    p.add_argument(
        "--run",
        default="relay,consumer",
        help="backbone: what this process runs: relay,consumer (a worker) | relay | consumer",
    )
    p.add_argument("--handler", choices=HANDLERS, default=HANDLERS[0], help=f"backbone: {HANDLER_HELP}")
    p.add_argument("--outbox-batch-size", type=int, default=500)
    p.add_argument("--outbox-poll-interval", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--profile", help="write a cProfile summary of this process to this file")
    cfg = p.parse_args()
    counter = install_log_counter(prefix="[child] ")
    status = 0
    profiler = None
    if cfg.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU time, not wall time
        profiler.enable()
    try:
        run_event_loop(main_async(cfg))
    except Exception as exc:  # noqa: BLE001
        print(f"  [child] failed: {exc!r}", file=sys.stderr)
        status = 1
    finally:
        if profiler is not None:
            import pstats

            profiler.disable()
            with open(cfg.profile, "w") as f:
                stats = pstats.Stats(profiler, stream=f)
                stats.sort_stats("tottime").print_stats(45)
                stats.sort_stats("cumulative").print_stats(60)
    report("LOG", counter.counts, counter.first)
    return status


if __name__ == "__main__":
    sys.exit(main())
