"""The outbox relay: claims unpublished rows, publishes them with the idempotent producer, marks them.

Rows are claimed and marked published by one `UPDATE ... FOR UPDATE SKIP LOCKED` statement in a
transaction that commits only after Kafka acknowledged every row, so two relays never publish
the same row concurrently, and a relay that dies mid-batch leaves its rows unmarked (its
transaction aborts with the connection) for the next one. The price is at-least-once delivery:
a row published just before a crash is published again, and the consumers' inbox drops the
duplicate. The relay wakes on LISTEN/NOTIFY and polls as a fallback.

Once a batch is acknowledged, its commit runs in the background while the next batch is claimed
and sent on a second connection: the still-uncommitted rows are locked, so the next claim skips
them (no row is published twice by one relay), and every row of the next batch is sent after
the previous batch was acknowledged, so a commit that fails (its rows are published again later)
cannot reorder events: the repeats come after the originals and the inboxes drop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.aio import wait_woken
from common.messaging.kafka import make_producer
from common.messaging.tables import notify_channel
from common.observability import metrics
from common.settings import BaseServiceSettings

log = logging.getLogger("common.relay")

# Claim and mark in one statement: the row locks are held, and the mark kept, only if the
# transaction commits (after Kafka acknowledged the rows). published_at is the claim statement's
# start (the transaction may have been begun ahead of it).
_CLAIM = (
    "WITH claimed AS (SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 "
    "FOR UPDATE SKIP LOCKED) "
    "UPDATE outbox o SET published_at = statement_timestamp(), attempts = o.attempts + 1 "
    "FROM claimed "
    "WHERE o.id = claimed.id RETURNING o.id, o.topic, o.key, o.envelope::text"
)
_PURGE = text(
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - "
    "make_interval(secs => :keep) LIMIT 5000)"
)
# Inbox rows must outlive any redelivery: Kafka keeps records 72 h locally; keep ids 7 days.
_PURGE_INBOX = text(
    "DELETE FROM inbox WHERE (consumer_group, event_id) IN (SELECT consumer_group, event_id "
    "FROM inbox WHERE received_at < now() - interval '7 days' LIMIT 5000)"
)
PURGE_EVERY_S = 60.0
HEADERS = [("content-type", b"application/cloudevents+json")]
_partitioner = DefaultPartitioner()


class _Lane:
    """One of the relay's two database connections, and the commit running on it, if any.

    The relay's own connections (not the service's pool): no pre-ping per transaction, and
    `synchronous_commit = off` for the whole connection (the mark need not wait for the WAL
    flush: if a crash loses it, the rows are published again and the inboxes drop the repeats).
    Transactions are plain `BEGIN` / `COMMIT` statements, so that ending one and beginning the
    next is a single round trip (`COMMIT; BEGIN`, one simple-protocol query).
    """

    def __init__(self, settings: BaseServiceSettings, name: str) -> None:
        self._settings = settings
        self._name = name
        self.conn: asyncpg.Connection | None = None
        self.commit: asyncio.Task | None = None
        # A transaction is open on the connection, begun with the last commit (or the last empty
        # claim's rollback), ahead of the next claim: the claim then costs one round trip on the
        # latency path instead of two (BEGIN, claim).
        self.begun = False

    async def connection(self) -> asyncpg.Connection:
        if self.commit is not None:
            await self.commit  # never raises: see OutboxRelay._commit
            self.commit = None
        if self.conn is None or self.conn.is_closed():
            self.begun = False  # begun on the connection that is gone
            self.conn = await asyncpg.connect(
                self._settings.asyncpg_dsn,
                server_settings={
                    "search_path": self._settings.db_schema,
                    "application_name": f"{self._settings.service_name}-{self._name}",
                    "synchronous_commit": "off",
                },
            )
        return self.conn

    async def end(self, statement: str) -> None:
        """`COMMIT` or `ROLLBACK` the open transaction and begin the next one, in one round
        trip. Raises (and drops the connection) on failure: its state is then unknown."""
        assert self.conn is not None
        self.begun = False
        try:
            await self.conn.execute(f"{statement}; BEGIN")
        except BaseException:
            self.drop()
            raise
        self.begun = True

    def drop(self) -> None:
        """Forget a connection in an unknown state (an error mid-transaction): closing it rolls
        back whatever it had open."""
        self.begun = False
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    async def close(self) -> None:
        if self.commit is not None:
            await self.commit
            self.commit = None
        self.begun = False  # closing the connection rolls it back
        if self.conn is not None and not self.conn.is_closed():
            try:
                await asyncio.wait_for(self.conn.close(), 5)
            except Exception:  # noqa: BLE001 - closing a broken connection
                self.conn.terminate()
        self.conn = None


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
        # Two connections: a batch is claimed and sent on one while the previous batch's
        # commit finishes on the other.
        self._lanes = [_Lane(settings, "relay-a"), _Lane(settings, "relay-b")]
        self._next_lane = 0

    async def run(self, stop: asyncio.Event) -> None:
        self._producer = make_producer(self.settings)
        await self._start_producer(stop)
        listener = asyncio.create_task(self._listen(stop), name="outbox-listen")
        purger = asyncio.create_task(self._purge_loop(stop), name="outbox-purge")
        backoff = 0.2
        try:
            while not stop.is_set():
                # Cleared before claiming: a NOTIFY that lands during the batch wakes the next wait.
                self._wake.clear()
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
            purger.cancel()  # a DELETE under way rolls back: the next purge deletes those rows
            await asyncio.gather(listener, purger, return_exceptions=True)
            for lane in self._lanes:
                await lane.close()
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
        """Claim, publish and (in the background) commit one batch; returns how many rows it
        published. Returns once Kafka acknowledged them (the commit runs in the background)."""
        assert self._producer is not None
        lane = self._lanes[self._next_lane]
        conn = await lane.connection()  # waits for the commit still running on it
        try:
            if not lane.begun:
                await conn.execute("BEGIN")
                lane.begun = True
            rows = await conn.fetch(_CLAIM, self.batch_size)
            if not rows:
                await lane.end("ROLLBACK")
                return 0
            rows.sort(key=lambda row: row[0])  # RETURNING has no order: publish in id order
            await asyncio.gather(*await self._send(rows))
        except BaseException:
            # Roll back (the rows stay unpublished for the next pass); a connection in an
            # unknown state is dropped instead, which rolls back just the same.
            if lane.conn is not None:
                with contextlib.suppress(BaseException):  # end() drops what it cannot roll back
                    await asyncio.wait_for(lane.end("ROLLBACK"), 5)
            raise
        lane.commit = asyncio.create_task(self._commit(lane, rows), name="outbox-commit")
        self._next_lane = 1 - self._next_lane
        return len(rows)

    async def _send(self, rows: list) -> list[asyncio.Future]:
        """Hand the rows to the producer, in order, as one record batch per partition (one
        future per batch, not one per record); the partition of a key is the producer's own
        (`DefaultPartitioner`: murmur2 of the key over the topic's partitions)."""
        producer = self._producer
        assert producer is not None
        builders: dict[tuple[str, int], Any] = {}
        partitions: dict[str, list[int]] = {}
        futures = []
        for row in rows:
            topic, key, value = row[1], row[2].encode(), row[3].encode()
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = _partitioner(key, partitions[topic], partitions[topic])
            builder = builders.get((topic, partition))
            if builder is None:
                builder = builders[topic, partition] = producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=HEADERS) is None:
                # Full (max_batch_size): send it, go on in a new one.
                futures.append(await producer.send_batch(builder, topic, partition=partition))
                builder = builders[topic, partition] = producer.create_batch()
                builder.append(timestamp=None, key=key, value=value, headers=HEADERS)
        for (topic, partition), builder in builders.items():
            futures.append(await producer.send_batch(builder, topic, partition=partition))
        return futures

    async def _commit(self, lane: _Lane, rows: list) -> None:
        """Commit a published batch's mark, and begin the lane's next transaction in the same
        round trip, off the latency path (under load it is used within milliseconds; when the
        outbox is idle it waits, holding no snapshot and no lock, until the next wake or poll,
        whose empty claim rolls it back and begins another). Never raises: a failed commit
        leaves the rows unpublished, and they go out again (the inboxes drop the repeats)."""
        try:
            await lane.end("COMMIT")
        except Exception as exc:  # noqa: BLE001 - end() dropped the connection
            log.warning(f"outbox mark failed, the batch will be published again: {exc!r}")
            return
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[1]] = counts.get(row[1], 0) + 1
        for topic, n in counts.items():
            metrics.EVENTS_PUBLISHED.labels(topic=topic).inc(n)

    async def _purge_loop(self, stop: asyncio.Event) -> None:
        """A purge at start, then every PURGE_EVERY_S, beside the publishing loop: a purge
        working off a backlog takes seconds (5,000 rows took 2-3.5 s with a bulk send under
        way), and run inline it held every event back meanwhile (a bulk send's deliveries stood
        still 7 s in one bench run, most likely for that)."""
        while not stop.is_set():
            await self._purge()
            await wait_woken(stop, None, PURGE_EVERY_S)

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
