"""The worker process of a service: outbox relay + consumers (and any other long-running loop of
the service, such as messaging's SMS dispatcher), separate from the API process."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.contracts import all_topics
from common.db import BATCH_SERVER_SETTINGS, create_engine, create_session_factory
from common.messaging.kafka import ensure_topics
from common.messaging.relay import OutboxRelay
from common.observability.logging import setup_logging
from common.observability.tracing import setup_tracing
from common.runtime import freeze_startup_heap
from common.runtime import run as run_event_loop
from common.settings import BaseServiceSettings

log = logging.getLogger("common.worker")


class Runner(Protocol):
    """What the worker runs as one task: an `EventConsumer`, or any loop that returns once
    `stop` is set."""

    async def run(self, stop: asyncio.Event) -> None: ...


# Builds the service's runners (consumers first, by convention) once the session factory exists.
ConsumerFactory = Callable[[async_sessionmaker[AsyncSession]], Sequence[Runner]]


def worker_engine(settings: BaseServiceSettings) -> AsyncEngine:
    """The worker's engine. Consumers combine events and handlers take whole runs of them, so its
    statements run over arrays of any size: custom plans, no JIT (BATCH_SERVER_SETTINGS)."""
    return create_engine(settings, server_settings=BATCH_SERVER_SETTINGS)


async def run_worker_async(
    settings: BaseServiceSettings,
    consumers: ConsumerFactory = lambda _: [],
    stop: asyncio.Event | None = None,
) -> None:
    stop = stop or asyncio.Event()
    engine = worker_engine(settings)
    session_factory = create_session_factory(engine, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        # Topics are not auto-created: a missing one would hold the whole outbox back.
        await asyncio.wait_for(ensure_topics(settings, all_topics()), 30)
    except Exception as exc:  # noqa: BLE001 - the relay and consumers retry on their own
        log.warning(f"could not ensure topics at start: {exc!r}")
    runners: list[Runner] = [OutboxRelay(settings, session_factory), *consumers(session_factory)]
    log.info("worker starting", extra={"runners": [type(r).__name__ for r in runners]})
    freeze_startup_heap()
    try:
        async with asyncio.TaskGroup() as tg:
            for runner in runners:
                tg.create_task(runner.run(stop))
    finally:
        await engine.dispose()
        log.info("worker stopped")


def run_worker(settings: BaseServiceSettings, consumers: ConsumerFactory = lambda _: []) -> None:
    """Entry point for `python -m <service>.worker`."""
    setup_logging(settings)
    setup_tracing(settings)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")
    run_event_loop(run_worker_async(settings, consumers))
