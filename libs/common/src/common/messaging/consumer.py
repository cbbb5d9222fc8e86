"""The consumer runner: typed handlers, inbox de-duplication, retries with backoff, a `.dlq` topic.

Per partition batch, records are handled in order inside one database transaction: one statement
claims every event's inbox row (so a redelivered event changes nothing), then the handlers run.
The Kafka offset is committed only after that transaction commits. If a handler raises, the
transaction rolls back whole and the batch is redone with one savepoint per event, which commits
the events before the failing one; the failing one is retried alone, with backoff, before the
records behind it (per-key order is kept). When retries run out, or the handler raised
DeadLetter, or the record cannot be decoded, or its version is unknown, it goes to
`<topic>.dlq` with the reason. Handlers therefore may run more than once for one event; only
what they do in the given session is kept exactly once, so they keep their effects there.
Infrastructure failures (database or broker unreachable) are never dead-lettered: the batch is
retried until they pass, and nothing is committed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.aio import wait_woken
from common.context import request_id_var
from common.contracts.envelope import EventEnvelope, dlq_topic, split_type, topic_for
from common.contracts.registry import model_for
from common.db.held import HeldConnection
from common.messaging.kafka import make_consumer, make_producer
from common.observability import metrics
from common.observability.tracing import consume_span
from common.settings import BaseServiceSettings

log = logging.getLogger("common.consumer")

Handler = Callable[[AsyncSession, EventEnvelope[Any]], Awaitable[None]]
# Handles a run of consecutive events of one type from one partition, in order, in one call: for
# hot paths where one statement per batch beats one per event (billing's holds, messaging's
# billing replies). Called with a single event when the batch is redone event by event.
BatchHandler = Callable[[AsyncSession, list[EventEnvelope[Any]]], Awaitable[None]]

_CLAIM = text(
    "INSERT INTO inbox (consumer_group, event_id, event_type, outcome) "
    "VALUES (:g, :id, :t, :o) ON CONFLICT DO NOTHING RETURNING 1"
)


_CLAIM_MANY = text(
    "INSERT INTO inbox (consumer_group, event_id, event_type, outcome) "
    "SELECT :g, i, t, 'handled' FROM unnest(CAST(:ids AS text[]), CAST(:types AS text[])) AS u(i, t) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


class _HandlerFailed(Exception):
    """A handler raised in the fast path: redo the batch one savepoint per event."""


class _SeenBefore(Exception):
    """The claim that rode with the BEGIN did not insert every inbox row: some event of the
    batch was handled before (a redelivery). Redo the batch with a claim that tells which."""


class DeadLetter(Exception):
    """Raised by a handler for an event that can never succeed: no retry, straight to the DLQ."""


@dataclass
class _Item:
    record: ConsumerRecord
    envelope: EventEnvelope[Any] | None = None
    dead_reason: str | None = None  # set: undecodable / unknown version -> DLQ without handling


# SQLSTATE classes of a database that is away or overloaded, not of a bad event: connection
# exceptions (08), operator intervention such as shutdown or restart (57P), insufficient
# resources (53), and serialisation failures / deadlocks that a retry resolves.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P", "53")
_TRANSIENT_SQLSTATES = {"40001", "40P01"}


def is_transient(exc: BaseException) -> bool:
    """Errors of the infrastructure, not of the event: retry forever, never dead-letter."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES) or sqlstate in _TRANSIENT_SQLSTATES
        ):
            return True
        if isinstance(
            current,
            OSError
            | ConnectionError
            | TimeoutError
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | KafkaError,
        ):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


class EventConsumer:
    """Consume the topics that `handlers` imply, as consumer group `group_id`."""

    CLAIM_WITH_BEGIN_MAX = 50  # events: above, the parameterised claim (`_begin_and_claim`)

    def __init__(
        self,
        settings: BaseServiceSettings,
        session_factory: async_sessionmaker[AsyncSession],
        group_id: str,
        handlers: dict[str, Handler],
        *,
        batch_handlers: dict[str, BatchHandler] | None = None,
        on_committed: Callable[[Sequence[EventEnvelope[Any]]], None] | None = None,
    ) -> None:
        batch_handlers = dict(batch_handlers or {})
        if not handlers and not batch_handlers:
            raise ValueError("a consumer needs at least one handler")
        if set(handlers) & set(batch_handlers):
            raise ValueError("an event type has either a handler or a batch handler, not both")
        for event_type in [*handlers, *batch_handlers]:
            if model_for(event_type) is None:
                raise ValueError(f"no contract registered for {event_type}")
        self.settings = settings
        self.session_factory = session_factory
        self.group_id = group_id
        self.handlers = handlers
        self.batch_handlers = batch_handlers
        types = [*handlers, *batch_handlers]
        self.topics = sorted({topic_for(t) for t in types})
        self._bases = {split_type(t)[0] for t in types}
        self._envelope_models = {t: EventEnvelope[model_for(t)] for t in types}  # type: ignore[misc]
        by_topic: dict[str, list[str]] = {}
        for t in types:
            by_topic.setdefault(topic_for(t), []).append(t)
        self._only_type = {
            topic: (ts[0], self._envelope_models[ts[0]]) for topic, ts in by_topic.items() if len(ts) == 1
        }
        self.on_committed = on_committed
        self.max_retries = settings.consumer_max_retries
        self.backoff = settings.consumer_backoff_s
        self._producer = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        consumer = make_consumer(self.settings, self.group_id, *self.topics)
        self._producer = make_producer(self.settings)
        await _start_with_retry(consumer.start, stop, "consumer")
        await _start_with_retry(self._producer.start, stop, "dlq producer")
        log.info("consumer started", extra={"group": self.group_id, "topics": self.topics})
        pipeline = _Pipeline(self, consumer, stop)
        try:
            await pipeline.run()
        finally:
            await consumer.stop()
            await self._producer.stop()

    async def _commit(self, consumer, offsets) -> None:  # noqa: ANN001
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The partition moved to another member or the broker is away: the records will be
            # delivered again, and the inbox drops what we handled.
            log.warning("offset commit failed", extra={"error": repr(exc)})

    # -- processing --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self, begin: str = "BEGIN") -> AsyncIterator[tuple[AsyncSession, str | None]]:
        """A session in one transaction, committed when the block ends without an exception.

        On the partition's held connection (`common.db.held`: taken from the pool once and kept
        while events keep coming, given back after `IDLE_S` without any, replaced after an
        infrastructure error), which SQLAlchemy drives in autocommit mode, the transaction is
        plain `BEGIN` / `COMMIT` statements on the driver's connection. `begin` may carry a
        statement without parameters behind the `BEGIN` (the inbox claim: one round trip instead
        of two); the block gets that query's status. Outside a partition task, a pool
        connection and SQLAlchemy's own transaction (status None)."""
        held = _HELD.get()
        if held is None:
            async with self.session_factory() as session, session.begin():
                yield session, None
            return
        conn = await held.get()
        driver = await held.driver()
        try:
            status = await driver.execute(begin)
            async with self.session_factory(bind=conn) as session:
                yield session, status
                await session.flush()  # what a handler added but did not flush goes in too
            await driver.execute("COMMIT")
        except BaseException:
            await held.end_transaction()
            raise

    async def _process_partition(
        self, tp: TopicPartition | None, records: list[ConsumerRecord], stop: asyncio.Event
    ) -> bool:
        """Handle records in order (one partition's, `tp`, or several partitions' one after the
        other, `tp` None); True once all of them are settled."""
        items = [self._decode(r) for r in records]
        i = 0
        backoff = self.backoff
        while i < len(items):
            if stop.is_set():
                return False
            try:
                i = await self._process_from(items, i)
                backoff = self.backoff
            except Exception as exc:  # noqa: BLE001
                if not is_transient(exc):
                    raise
                log.warning("infrastructure error, retrying batch", extra={"error": repr(exc)})
                held = _HELD.get()
                if held is not None:
                    await held.release()  # the retry starts on a fresh connection
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        return True

    async def _process_from(self, items: list[_Item], start: int) -> int:
        """Handle items[start:] and return the index to continue from.

        Fast path: claim every event's inbox row in one statement and run the handlers in one
        transaction. If a handler fails, that transaction rolls back whole and the same records
        go through the slow path, one savepoint per event, which isolates the failing one.
        """
        end = next((j for j in range(start, len(items)) if items[j].dead_reason), len(items))
        envelopes = [it.envelope for it in items[start:end] if it.envelope is not None]
        if envelopes:
            try:
                self._committed(await self._fast_batch(envelopes))
            except _HandlerFailed:
                return await self._slow_from(items, start)
        if end == len(items):
            return end
        await self._settle_failure(items[end], None)  # undecodable / unknown version
        return end + 1

    async def _fast_batch(self, envelopes: list[EventEnvelope[Any]]) -> list[EventEnvelope[Any]]:
        claim = self._begin_and_claim(envelopes)
        if claim is not None:
            try:
                return await self._fast_transaction(envelopes, claim)
            except _SeenBefore:
                pass  # rolled back: claim again, learning which ones are new
        return await self._fast_transaction(envelopes, None)

    async def _fast_transaction(
        self, envelopes: list[EventEnvelope[Any]], claim: str | None
    ) -> list[EventEnvelope[Any]]:
        """Claim and handle `envelopes` in one transaction. `claim`: the claim rides with the
        BEGIN (`_begin_and_claim`); if it did not insert every row, some event was handled
        before: `_SeenBefore` (the transaction rolls back). Without it, a claim with RETURNING
        tells which ones are new."""
        handled: list[EventEnvelope[Any]] = []
        async with self._transaction(claim or "BEGIN") as (session, status):
            if claim is not None:
                fresh = {e.id for e in envelopes}
                if status != f"INSERT 0 {len(fresh)}":
                    raise _SeenBefore
            else:
                rows = await session.execute(
                    _CLAIM_MANY,
                    {
                        "g": self.group_id,
                        "ids": [e.id for e in envelopes],
                        "types": [e.type for e in envelopes],
                    },
                )
                fresh = {row[0] for row in rows}
            todo: list[EventEnvelope[Any]] = []
            for envelope in envelopes:
                if envelope.id not in fresh:
                    self._duplicate(envelope)
                    continue
                fresh.discard(envelope.id)  # the same id twice in one batch: handle once
                todo.append(envelope)
            i = 0
            while i < len(todo):
                # A run of consecutive events of one batch-handled type goes in one call.
                j = i + 1
                if todo[i].type in self.batch_handlers:
                    while j < len(todo) and todo[j].type == todo[i].type:
                        j += 1
                try:
                    await self._run_handler(session, todo[i:j])
                except Exception as exc:  # noqa: BLE001
                    if is_transient(exc):
                        raise
                    raise _HandlerFailed from exc
                handled.extend(todo[i:j])
                i = j
        return handled

    def _begin_and_claim(self, envelopes: list[EventEnvelope[Any]]) -> str | None:
        """`BEGIN` and the claim of every event's inbox row as one simple-protocol
        query (no parameters: the values are literals), for the held connection; None when an
        event id is not plain text, or for more than `CLAIM_WITH_BEGIN_MAX` events (they go
        through the parameterised claim: for a long list PostgreSQL parses the literals more
        slowly than it binds arrays, measured 15 % slower at 300 events, and one round trip
        more matters little next to such a transaction). The event
        types are registered ones (anything else was dead-lettered in `_decode`) and the group
        is ours; every value is quoted by `_literal` all the same."""
        if _HELD.get() is None or len(envelopes) > self.CLAIM_WITH_BEGIN_MAX:
            return None
        group = _literal(self.group_id)
        values = []
        for e in envelopes:
            if not (e.id.isprintable() and len(e.id) <= 200):
                return None
            values.append(f"({group}, {_literal(e.id)}, {_literal(e.type)}, 'handled')")
        return (
            "BEGIN; INSERT INTO inbox (consumer_group, event_id, event_type, outcome) "
            f"VALUES {', '.join(values)} ON CONFLICT DO NOTHING"
        )

    async def _slow_from(self, items: list[_Item], start: int) -> int:
        """One savepoint per event; stop at the first failure and settle it."""
        failed_at: int | None = None
        failure: BaseException | None = None
        handled: list[EventEnvelope[Any]] = []
        async with self._transaction() as (session, _):
            for j in range(start, len(items)):
                item = items[j]
                if item.dead_reason is not None:
                    failed_at = j
                    break
                if item.envelope is None:
                    continue  # an event type this group does not handle
                try:
                    if await self._handle(session, item.envelope):
                        handled.append(item.envelope)
                except Exception as exc:  # noqa: BLE001
                    if is_transient(exc):
                        raise
                    failed_at, failure = j, exc
                    break
        self._committed(handled)
        if failed_at is None:
            return len(items)
        await self._settle_failure(items[failed_at], failure)
        return failed_at + 1

    async def _handle(self, session: AsyncSession, envelope: EventEnvelope[Any]) -> bool:
        """Claim the event in the inbox and run its handler, in one savepoint."""
        async with session.begin_nested():
            claimed = await session.execute(
                _CLAIM, {"g": self.group_id, "id": envelope.id, "t": envelope.type, "o": "handled"}
            )
            if claimed.first() is None:
                self._duplicate(envelope)
                return False
            await self._run_handler(session, [envelope])
        return True

    async def _run_handler(self, session: AsyncSession, envelopes: list[EventEnvelope[Any]]) -> None:
        """The handler inside the event's trace (child of the producer's span) and request id.
        A batch handler's run is traced as its first event (a bulk send's events share the
        request's trace anyway)."""
        first = envelopes[0]
        with consume_span(first, self.group_id):
            token = request_id_var.set(first.requestid)
            try:
                batch = self.batch_handlers.get(first.type)
                if batch is not None:
                    await batch(session, envelopes)
                else:
                    await self.handlers[first.type](session, first)
            finally:
                request_id_var.reset(token)

    def _duplicate(self, envelope: EventEnvelope[Any]) -> None:
        metrics.EVENTS_CONSUMED.labels(self.group_id, envelope.type, "duplicate").inc()
        log.info("duplicate event skipped", extra={"event_id": envelope.id, "group": self.group_id})

    async def _settle_failure(self, item: _Item, failure: BaseException | None) -> None:
        if item.dead_reason is None and not isinstance(failure, DeadLetter):
            assert item.envelope is not None
            for attempt in range(1, self.max_retries + 1):
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                try:
                    async with self._transaction() as (session, _):
                        handled = await self._handle(session, item.envelope)
                    self._committed([item.envelope] if handled else [])
                    return
                except Exception as exc:  # noqa: BLE001
                    if is_transient(exc):
                        raise
                    failure = exc
                    log.warning(
                        "handler failed",
                        extra={"event_id": item.envelope.id, "attempt": attempt, "error": repr(exc)},
                    )
        if item.dead_reason:
            reason = item.dead_reason
        elif isinstance(failure, DeadLetter):
            reason = f"rejected by handler: {failure}"[:1000]
        else:
            reason = f"handler failed after retries: {failure!r}"[:1000]
        await self._dead_letter(item, reason)

    async def _dead_letter(self, item: _Item, reason: str) -> None:
        record = item.record
        assert self._producer is not None
        headers = list(record.headers or []) + [
            ("dlq-reason", reason.encode()),
            ("dlq-source-topic", record.topic.encode()),
            ("dlq-source-partition", str(record.partition).encode()),
            ("dlq-source-offset", str(record.offset).encode()),
            ("dlq-consumer-group", self.group_id.encode()),
        ]
        await (
            await self._producer.send(
                dlq_topic(record.topic), value=record.value, key=record.key, headers=headers
            )
        )
        if item.envelope is not None:
            async with self._transaction() as (session, _):
                await session.execute(
                    _CLAIM,
                    {
                        "g": self.group_id,
                        "id": item.envelope.id,
                        "t": item.envelope.type,
                        "o": "dead",
                    },
                )
        metrics.EVENTS_CONSUMED.labels(self.group_id, _type_label(item), "dead_lettered").inc()
        log.error(
            "event dead-lettered",
            extra={"topic": record.topic, "offset": record.offset, "reason": reason},
        )

    def _committed(self, handled: list[EventEnvelope[Any]]) -> None:
        """Count and log only what the database kept: a rolled-back batch is redone."""
        if not handled:
            return
        counts: dict[str, int] = {}
        for envelope in handled:
            counts[envelope.type] = counts.get(envelope.type, 0) + 1
        for event_type, n in counts.items():
            metrics.EVENTS_CONSUMED.labels(self.group_id, event_type, "handled").inc(n)
        # One line per event is DEBUG: at thousands of events a second, INFO lines cost the
        # worker a tenth of its CPU (formatting and the pipe to the log collector). The counter
        # above counts them; handlers log what matters at INFO, inside the event's trace.
        if log.isEnabledFor(logging.DEBUG):
            for envelope in handled:
                trace_id = envelope.traceparent.split("-")[1] if envelope.traceparent else None
                log.debug(
                    "event handled",
                    extra={
                        "event_id": envelope.id,
                        "event_type": envelope.type,
                        "group": self.group_id,
                        "request_id": envelope.requestid,
                        "trace_id": trace_id,
                    },
                )
        if self.on_committed is not None:
            self.on_committed(handled)

    def _decode(self, record: ConsumerRecord) -> _Item:
        # The common case first: a topic on which the group handles one type is parsed and
        # validated in one go (pydantic's JSON parser); anything else takes the path below.
        only = self._only_type.get(record.topic)
        if only is not None and record.value is not None:
            try:
                envelope = only[1].model_validate_json(record.value)
            except ValidationError:
                pass
            else:
                if envelope.type == only[0]:
                    return _Item(record, envelope=envelope)
        try:
            raw = json.loads(record.value)
        except (TypeError, ValueError) as exc:
            return _Item(record, dead_reason=f"malformed: not JSON ({exc})")
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            return _Item(record, dead_reason="malformed: no event type")
        event_type = raw["type"]
        model = self._envelope_models.get(event_type)
        if model is None:
            try:
                base, _ = split_type(event_type)
            except ValueError:
                return _Item(record, dead_reason=f"malformed: bad event type {event_type!r}")
            if base in self._bases:
                return _Item(record, dead_reason=f"unknown version: {event_type}")
            return _Item(record)  # someone else's event on a shared topic
        try:
            return _Item(record, envelope=model.model_validate(raw))
        except ValidationError as exc:
            return _Item(record, dead_reason=f"malformed: {exc}"[:1000])


_HELD: ContextVar[HeldConnection | None] = ContextVar("consumer_held_connection", default=None)


def _literal(value: str) -> str:
    """`value` as an escape-string literal (E'...'): backslashes and quotes doubled, which reads
    the same whatever standard_conforming_strings says."""
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class _Pipeline:
    """The runner's loop: fetching, handling and offset commits overlap.

    One task fetches (`getmany`) and queues each partition's records as soon as they arrive:
    aiokafka sends the next fetch to a broker only once every record it fetched from that
    broker has been taken, so a fetch stays in flight while handlers run. One task handles:
    whenever it is free, it takes everything queued (up to `MAX_RECORDS` per partition); up to
    `COMBINE_MAX` records, all partitions go in one transaction, each partition's records in
    order (fewer, fuller transactions: a transaction's round trips, not its rows, are what a
    handled event waits for); a larger backlog is handled partition by partition side by side,
    one transaction each. A third task commits the offsets of the records whose transactions
    committed, at most once per `COMMIT_INTERVAL_S`, all finished partitions in one request.
    At most about `MAX_QUEUED` records wait: beyond that fetching pauses.
    """

    MAX_RECORDS = 500
    MAX_QUEUED = 2000
    COMBINE_MAX = 100
    COMMIT_INTERVAL_S = 0.1
    IDLE_S = 2.0  # held connections are given back after this long without records

    def __init__(self, runner: EventConsumer, consumer, stop: asyncio.Event) -> None:  # noqa: ANN001
        self.runner = runner
        self.consumer = consumer
        self.stop = stop
        bind = runner.session_factory.kw.get("bind")
        self.engine = bind if isinstance(bind, AsyncEngine) else None
        # One per transaction running side by side (none without an engine to hold from).
        self.held: list[HeldConnection | None] = []
        self.halt = asyncio.Event()  # stop, or a failure: take no more records
        self.queues: dict[TopicPartition, list[ConsumerRecord]] = {}
        self.queued = 0
        self.ready = asyncio.Event()  # records were queued (or halt)
        self.room = asyncio.Event()  # records were taken (or halt)
        self.offsets: dict[TopicPartition, int] = {}  # handled, not yet committed
        self.offsets_ready = asyncio.Event()
        self.handler: asyncio.Task | None = None

    async def run(self) -> None:
        group = self.runner.group_id
        self.handler = handler = asyncio.create_task(self._handle_loop(), name=f"{group}-handle")
        committer = asyncio.create_task(self._commit_loop(), name=f"{group}-commit")
        stopper = asyncio.create_task(self.stop.wait())
        stopper.add_done_callback(lambda _: self._halt())
        handler.add_done_callback(lambda _: self._halt())
        try:
            while not self.halt.is_set():
                if self.queued >= self.MAX_QUEUED:
                    self.room.clear()
                    await self.room.wait()
                    continue
                try:
                    batches = await self.consumer.getmany(
                        timeout_ms=500, max_records=self.MAX_RECORDS
                    )
                except KafkaError as exc:
                    log.warning("fetch failed, retrying", extra={"error": repr(exc)})
                    await wait_woken(self.halt, None, 0.5)
                    continue
                for tp, records in batches.items():
                    if records:
                        self.queues.setdefault(tp, []).extend(records)
                        self.queued += len(records)
                        self.ready.set()
        finally:
            self._halt()
            stopper.cancel()
            # The transaction in progress finishes; then the finished offsets are committed.
            await asyncio.gather(handler, return_exceptions=True)
            await committer
            await self._release_all()
        if not handler.cancelled() and handler.exception() is not None:
            raise handler.exception()  # a bug outside a handler ends the runner

    def _halt(self) -> None:
        self.halt.set()
        self.ready.set()
        self.room.set()
        self.offsets_ready.set()

    def _take(self) -> list[tuple[TopicPartition, list[ConsumerRecord]]]:
        work = []
        assigned = self.consumer.assignment()
        for tp, queue in self.queues.items():
            if queue:
                records = queue[: self.MAX_RECORDS]
                del queue[: len(records)]
                self.queued -= len(records)
                if tp in assigned:  # else revoked: its new owner reads these records again
                    work.append((tp, records))
        self.room.set()
        return work

    async def _handle_loop(self) -> None:
        while not self.halt.is_set():
            if not self.queued:
                self.ready.clear()
                try:
                    await asyncio.wait_for(self.ready.wait(), self.IDLE_S)
                except TimeoutError:
                    await self._release_all()
                continue
            work = self._take()
            if not work:
                continue
            if len(work) == 1 or sum(len(records) for _, records in work) <= self.COMBINE_MAX:
                # Partitions are independent: concatenated, each keeps its own order.
                combined = [r for _, records in work for r in records]
                done = [await self._in_lane(0, None, combined)] * len(work)
            else:
                done = await asyncio.gather(
                    *(self._in_lane(i, tp, records) for i, (tp, records) in enumerate(work)),
                    return_exceptions=True,  # every lane finishes before a failure ends us
                )
                for result in done:
                    if isinstance(result, BaseException):
                        raise result
            for (tp, records), finished in zip(work, done, strict=True):
                if finished:
                    self.offsets[tp] = records[-1].offset + 1
            if self.offsets:
                self.offsets_ready.set()

    async def _in_lane(
        self, lane: int, tp: TopicPartition | None, records: list[ConsumerRecord]
    ) -> bool:
        """`_process_partition` on lane `lane`'s held connection."""
        while len(self.held) <= lane:
            self.held.append(
                HeldConnection(self.engine, autocommit=True) if self.engine is not None else None
            )
        token = _HELD.set(self.held[lane])
        try:
            return await self.runner._process_partition(tp, records, self.halt)
        finally:
            _HELD.reset(token)

    async def _commit_loop(self) -> None:
        """Commit handled offsets, one request at a time, every finished partition in it; once
        halted (and the handling task has finished), the last ones, then return."""
        while True:
            if self.offsets:
                offsets, self.offsets = self.offsets, {}
                started = time.monotonic()
                await self.runner._commit(self.consumer, offsets)
                # A crash before the next commit only redelivers a few more records, which the
                # inbox drops.
                pause = self.COMMIT_INTERVAL_S - (time.monotonic() - started)
                if pause > 0 and not self.halt.is_set():
                    await wait_woken(self.halt, None, pause)
                continue
            if self.halt.is_set() and self.handler is not None and self.handler.done():
                return
            self.offsets_ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.offsets_ready.wait(), 0.5)

    async def _release_all(self) -> None:
        for held in self.held:
            if held is not None:
                await held.release()


def _type_label(item: _Item) -> str:
    return item.envelope.type if item.envelope is not None else "undecodable"


async def _start_with_retry(start: Callable[[], Awaitable[None]], stop: asyncio.Event, what: str) -> None:
    while True:
        try:
            await start()
            return
        except Exception as exc:  # noqa: BLE001
            if stop.is_set():
                raise
            log.warning(f"{what} cannot start yet", extra={"error": repr(exc)})
            await asyncio.sleep(1.0)
