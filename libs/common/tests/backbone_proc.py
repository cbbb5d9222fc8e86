"""A backbone process for the fault-injection tests: an outbox relay or a consumer, run as its
own OS process so a test can kill it (SIGKILL, or os._exit at a chosen point) and restart it.

    python backbone_proc.py relay    --schema S
    python backbone_proc.py consume  --schema S --type T --group G [--crash-after N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from common.contracts.base import Payload
from common.contracts.registry import register
from common.db import create_engine, create_session_factory
from common.messaging.consumer import EventConsumer
from common.messaging.relay import OutboxRelay
from common.observability.logging import setup_logging
from common.runtime import run as run_event_loop
from common.settings import BaseServiceSettings
from sqlalchemy import text


class Item(Payload):
    seq: int
    body: str = ""


def settings_for(schema: str, **overrides) -> BaseServiceSettings:
    return BaseServiceSettings(
        service_name=schema,
        db_schema=schema,
        database_url=f"postgresql+asyncpg://{schema}:{schema}@127.0.0.1:55432/switchboard",
        kafka_session_timeout_ms=6000,
        consumer_backoff_s=0.05,
        db_pool_size=4,
        **overrides,
    )


async def record_effect(session, envelope) -> None:  # noqa: ANN001
    """The side effect: deliberately not idempotent by itself, so only the inbox keeps it once."""
    if envelope.data.body == "poison":
        raise ValueError("poison pill")
    await session.execute(
        text("INSERT INTO effects (event_type, event_id, seq) VALUES (:t, :i, :s)"),
        {"t": envelope.type, "i": envelope.id, "s": envelope.data.seq},
    )


def make_consumer(settings, sessions, event_type: str, group: str, crash_after: int = 0):  # noqa: ANN001
    seen = 0

    def on_committed(handled) -> None:  # noqa: ANN001
        nonlocal seen
        seen += len(handled)
        if crash_after and seen >= crash_after:
            # Handled and committed in Postgres, offset not yet committed in Kafka.
            print(f"CRASHING after {seen} handled events", flush=True)
            os._exit(17)

    return EventConsumer(settings, sessions, group, {event_type: record_effect}, on_committed=on_committed)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "consume"])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--type")
    parser.add_argument("--group")
    parser.add_argument("--crash-after", type=int, default=0)
    parser.add_argument("--batch", type=int, default=500)
    ns = parser.parse_args()
    settings = settings_for(ns.schema, outbox_batch_size=ns.batch)
    setup_logging(settings)
    logging.getLogger("common").setLevel(logging.DEBUG)
    engine = create_engine(settings)
    sessions = create_session_factory(engine, settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if ns.role == "relay":
        runner = OutboxRelay(settings, sessions)
    else:
        register(ns.type, Item)
        runner = make_consumer(settings, sessions, ns.type, ns.group, ns.crash_after)
    print("READY", flush=True)
    await runner.run(stop)
    await engine.dispose()


if __name__ == "__main__":
    sys.exit(run_event_loop(main()))  # the event loop of a service's worker
