"""The outbox relay: claims unpublished rows, publishes them with the idempotent producer, marks them.

Rows are claimed with `FOR UPDATE SKIP LOCKED` inside one transaction that also marks them
published, so two relays never publish the same row concurrently, and a relay that dies mid-batch
leaves its rows unmarked (its transaction aborts with the connection) for the next one. The
price is at-least-once delivery: a row published just before a crash is published again, and
the consumers' inbox drops the duplicate. The relay wakes on LISTEN/NOTIFY and polls as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.aio import wait_woken
from common.messaging.kafka import make_producer
from common.messaging.tables import notify_channel
from common.observability import metrics
from common.settings import BaseServiceSettings

log = logging.getLogger("common.relay")

_CLAIM = text(
    "SELECT id, topic, key, envelope::text AS envelope FROM outbox "
    "WHERE published_at IS NULL ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
)
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")
_MARK = text("UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY(:ids)")
_PURGE = text(
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - "
    "make_interval(secs => :keep) LIMIT 5000)"
)
# Inbox rows must outlive any redelivery: Kafka keeps records 72 h locally; keep ids 7 days.
_PURGE_INBOX = text(
    "DELETE FROM inbox WHERE (consumer_group, event_id) IN (SELECT consumer_group, event_id "
    "FROM inbox WHERE received_at < now() - interval '7 days' LIMIT 5000)"
)
HEADERS = [("content-type", b"application/cloudevents+json")]


class OutboxRelay:
    def __init__(
        self,
        settings: BaseServiceSettings,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        keep_published_s: float = 24 * 3600,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.batch_size = settings.outbox_batch_size
        self.poll_interval = settings.outbox_poll_interval_s
        self.keep_published_s = keep_published_s
        self._wake = asyncio.Event()
        self._producer = None

    async def run(self, stop: asyncio.Event) -> None:
        self._producer = make_producer(self.settings)
        await self._start_producer(stop)
        listener = asyncio.create_task(self._listen(stop), name="outbox-listen")
        last_purge = 0.0
        backoff = 0.2
        try:
            while not stop.is_set():
                # Cleared before claiming: a NOTIFY that lands during the batch wakes the next wait.
                self._wake.clear()
                if time.monotonic() - last_purge > 60:
                    last_purge = time.monotonic()
                    await self._purge()
                try:
                    published = await self.publish_batch()
                    backoff = 0.2
                except Exception as exc:  # noqa: BLE001 - broker/db down: retry, never exit
                    log.warning(f"outbox publish failed, retrying: {exc!r}")
                    await wait_woken(stop, None, backoff)
                    backoff = min(backoff * 2, 5.0)
                    # A batch that timed out leaves the idempotent producer's sequence numbers
                    # in doubt; a fresh producer (new producer id) starts clean.
                    await self._replace_producer(stop)
                    continue
                if published >= self.batch_size:
                    continue
                await wait_woken(stop, self._wake, self.poll_interval)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await self._producer.stop()

    async def _replace_producer(self, stop: asyncio.Event) -> None:
        old, self._producer = self._producer, make_producer(self.settings)
        try:
            await asyncio.wait_for(old.stop(), 10)
        except Exception as exc:  # noqa: BLE001
            log.info(f"old producer did not stop cleanly: {exc!r}")
        await self._start_producer(stop)

    async def _start_producer(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await self._producer.start()
                return
            except Exception as exc:  # noqa: BLE001
                log.warning(f"kafka not reachable yet: {exc!r}")
                if stop.is_set():
                    raise
                # A failed start can leave connections half open: close them before the next try.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._producer.stop(), 5)
                self._producer = make_producer(self.settings)
                await asyncio.sleep(1.0)

    async def publish_batch(self) -> int:
        """Publish one batch; returns how many rows it published."""
        assert self._producer is not None
        async with self.session_factory() as session, session.begin():
            # The mark need not wait for the WAL flush: if a crash loses it, the rows are
            # published again and the consumers' inbox drops the repeats (at-least-once anyway).
            await session.execute(_ASYNC_COMMIT)
            rows = (await session.execute(_CLAIM, {"n": self.batch_size})).all()
            if not rows:
                return 0
            futures = [
                await self._producer.send(
                    row.topic, value=row.envelope.encode(), key=row.key.encode(), headers=HEADERS
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
            await session.execute(_MARK, {"ids": [row.id for row in rows]})
        for row in rows:
            metrics.EVENTS_PUBLISHED.labels(topic=row.topic).inc()
        return len(rows)

    async def _purge(self) -> None:
        """Delete published outbox rows and old inbox rows, 5,000 at a time, until caught up
        (bounded, so a huge backlog is worked off over several minutes, not in one go)."""
        try:
            for statement, params in ((_PURGE, {"keep": self.keep_published_s}), (_PURGE_INBOX, {})):
                for _ in range(20):
                    async with self.session_factory() as session, session.begin():
                        deleted = (await session.execute(statement, params)).rowcount
                    if deleted < 5000:
                        break
        except Exception as exc:  # noqa: BLE001
            log.warning("outbox purge failed", extra={"error": repr(exc)})

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection; reconnect when the database restarts."""
        channel = notify_channel(self.settings.db_schema)
        while not stop.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(self.settings.asyncpg_dsn)
                await conn.add_listener(channel, lambda *_: self._wake.set())
                self._wake.set()  # catch up on whatever was committed while we were away
                while not stop.is_set() and not conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.info("outbox listener reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()

