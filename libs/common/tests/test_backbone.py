"""The event backbone against the real PostgreSQL and Kafka: outbox -> relay -> consumer + inbox."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import backbone_proc
import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition
from common.contracts import EventEnvelope, dlq_topic, topic_for
from common.db import create_engine, create_session_factory
from common.messaging import emit, emit_many
from common.messaging.consumer import EventConsumer
from common.messaging.kafka import (
    consumer_config,
    make_consumer,
    make_producer,
    producer_config,
)
from common.messaging.relay import OutboxRelay
from common.observability import metrics
from common.settings import BaseServiceSettings
from sqlalchemy import text

from tests.support import devstack


async def emit_items(sessions, contract, seqs, per_tx=100, body="", bulk=False) -> None:  # noqa: ANN001
    seqs = list(seqs)
    for i in range(0, len(seqs), per_tx):
        async with sessions() as session, session.begin():
            chunk = seqs[i : i + per_tx]
            if bulk:
                await emit_many(session, [(contract.model(seq=s, body=body), f"item-{s}") for s in chunk])
            else:
                for seq in chunk:
                    await emit(session, contract.model(seq=seq, body=body), subject=f"item-{seq}")


async def effects(sessions, contract) -> tuple[int, int]:  # noqa: ANN001
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT count(*), count(DISTINCT event_id) FROM effects WHERE event_type = :t"),
                {"t": contract.type},
            )
        ).one()
    return row[0], row[1]


async def wait_effects(sessions, contract, n: int, timeout: float) -> tuple[int, int]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        total, distinct = await effects(sessions, contract)
        if total >= n or time.monotonic() > deadline:
            await asyncio.sleep(0.5)  # let any duplicate that would follow show up
            return await effects(sessions, contract)
        await asyncio.sleep(0.2)


class Background:
    """Run relays/consumers as tasks of this test, stopped cleanly at the end."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def start(self, runner) -> None:  # noqa: ANN001
        self.tasks.append(asyncio.create_task(runner.run(self.stop)))

    async def close(self) -> None:
        self.stop.set()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                raise r


@pytest.fixture
async def background():
    bg = Background()
    yield bg
    await bg.close()


# -- the factory -----------------------------------------------------------------------------


async def test_every_client_is_built_safe():
    settings = BaseServiceSettings(service_name="x")
    p = producer_config(settings)
    assert p["enable_idempotence"] is True
    assert p["acks"] == "all"
    c = consumer_config(settings, "g")
    assert c["enable_auto_commit"] is False
    assert c["isolation_level"] == "read_committed"
    assert c["auto_offset_reset"] == "earliest"
    # The objects really carry those settings (aiokafka would silently default otherwise).
    producer = make_producer(settings)
    assert producer._txn_manager is not None  # only built for an idempotent producer
    assert producer.client._client_id == "x-producer"
    consumer = make_consumer(settings, "g", "t")
    assert consumer._enable_auto_commit is False


# -- exactly once ----------------------------------------------------------------------------


async def test_outbox_events_are_consumed_exactly_once_even_when_redelivered(
    bb_settings, bb_sessions, contract, background
):
    background.start(OutboxRelay(bb_settings, bb_sessions))
    background.start(
        backbone_proc.make_consumer(bb_settings, bb_sessions, contract.type, f"g-{contract.type}")
    )
    await emit_items(bb_sessions, contract, range(100))
    await emit_items(bb_sessions, contract, range(100, 200), bulk=True)
    assert await wait_effects(bb_sessions, contract, 200, 60) == (200, 200)

    # Kafka is at-least-once: deliver every record a second time, as a relay retry would.
    consumer = make_consumer(bb_settings, f"copy-{contract.type}", topic_for(contract.type))
    producer = make_producer(bb_settings)
    await consumer.start()
    await producer.start()
    try:
        copied = 0
        deadline = time.monotonic() + 30
        while copied < 200 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    await producer.send_and_wait(r.topic, r.value, key=r.key, headers=list(r.headers))
                    copied += 1
        assert copied == 200
    finally:
        await consumer.stop()
        await producer.stop()
    # Wait until the consumer has really seen every copy (a fixed sleep would pass just as well
    # if it had seen none of them).
    duplicates = metrics.EVENTS_CONSUMED.labels(f"g-{contract.type}", contract.type, "duplicate")
    deadline = time.monotonic() + 60
    while duplicates._value.get() < 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert duplicates._value.get() >= 200  # (a rebalance may redeliver originals too)
    assert await effects(bb_sessions, contract) == (200, 200)


async def test_consumer_killed_after_handling_before_offset_commit_changes_nothing_twice(
    bb_settings, bb_sessions, contract, background, procs
):
    background.start(OutboxRelay(bb_settings, bb_sessions))
    # Enough events that the crash leaves some unhandled: the consumer runs a backlog's
    # partitions side by side (up to 100 records each), and all of them may commit before the
    # first commit's callback crashes the process.
    total = 1500
    await emit_items(bb_sessions, contract, range(total))
    group = f"g-{contract.type}"
    crashing = procs("consume", "--schema", "bbtest", "--type", contract.type, "--group", group,
                     "--crash-after", "50")
    assert await crashing.wait_exit(60) == 17, crashing.output()[-2000:]
    handled_before_crash, _ = await effects(bb_sessions, contract)
    assert 50 <= handled_before_crash < total

    again = procs("consume", "--schema", "bbtest", "--type", contract.type, "--group", group)
    assert await wait_effects(bb_sessions, contract, total, 90) == (total, total)
    # The restarted consumer really was handed the events whose offsets were never committed.
    await asyncio.sleep(1)
    assert "duplicate event skipped" in again.output()


async def test_relay_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    bb_settings, bb_sessions, contract, background, procs
):
    await emit_items(bb_sessions, contract, range(5000), per_tx=500)
    background.start(
        backbone_proc.make_consumer(bb_settings, bb_sessions, contract.type, f"g-{contract.type}")
    )
    relay = procs("relay", "--schema", "bbtest", "--batch", "200")
    published = 0
    deadline = time.monotonic() + 60
    while published == 0 and time.monotonic() < deadline:
        async with bb_sessions() as session:
            published = await session.scalar(
                text("SELECT count(*) FROM outbox WHERE event_type = :t AND published_at IS NOT NULL"),
                {"t": contract.type},
            )
        await asyncio.sleep(0.01)
    relay.proc.send_signal(signal.SIGKILL)
    await relay.wait_exit(10)
    async with bb_sessions() as session:
        left = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE event_type = :t AND published_at IS NULL"),
            {"t": contract.type},
        )
    assert left > 0, "the relay finished before it was killed: the test proved nothing"

    procs("relay", "--schema", "bbtest", "--batch", "200")
    assert await wait_effects(bb_sessions, contract, 5000, 120) == (5000, 5000)


async def test_a_batch_handler_gets_runs_of_events_and_a_poison_one_is_isolated(
    bb_settings, bb_sessions, contract, background
):
    """One call per run of events (one statement for many events); a failing event makes the
    batch go event by event: the others are handled exactly once, the poison one dead-lettered."""
    calls: list[int] = []
    background.start(OutboxRelay(bb_settings, bb_sessions))

    async def record_many(session, envelopes) -> None:  # noqa: ANN001
        calls.append(len(envelopes))
        if any(e.data.body == "poison" for e in envelopes):
            raise ValueError("poison pill")
        await session.execute(
            text(
                "INSERT INTO effects (event_type, event_id, seq) "
                "SELECT :t, i, s FROM unnest(CAST(:ids AS text[]), CAST(:seqs AS int[])) AS u(i, s)"
            ),
            {"t": contract.type, "ids": [e.id for e in envelopes], "seqs": [e.data.seq for e in envelopes]},
        )

    background.start(
        EventConsumer(bb_settings, bb_sessions, f"g-{contract.type}", {}, batch_handlers={contract.type: record_many})
    )
    await emit_items(bb_sessions, contract, range(300), per_tx=300, bulk=True)
    async with bb_sessions() as session, session.begin():
        await emit(session, contract.model(seq=300, body="poison"), subject="item-300")
    await emit_items(bb_sessions, contract, range(301, 400), per_tx=100, bulk=True)
    assert await wait_effects(bb_sessions, contract, 399, 60) == (399, 399)
    assert max(calls) > 1, calls  # events really arrived in runs, not one call each
    async with bb_sessions() as session:
        seqs = set((await session.execute(text("SELECT seq FROM effects WHERE event_type = :t"), {"t": contract.type})).scalars())
    assert seqs == set(range(400)) - {300}


async def read_topic(settings, topic: str, n: int, timeout: float = 30) -> list:  # noqa: ANN001
    """Every record of `topic` (at least `n`), each partition in offset order."""
    consumer = make_consumer(settings, f"reader-{uuid.uuid4().hex[:8]}", topic)
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < n and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        # Anything that would follow (a duplicate too many) shows up in this extra second.
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))


class FlakyRelay(OutboxRelay):
    """The real relay, with faults injected: the acknowledgements of the batches numbered in
    `lose_acks` fail after their records reached Kafka (as a timed-out request that was in fact
    written), and the commits numbered in `lose_commits` are rolled back instead (a mark that
    never reached the database)."""

    def __init__(self, *args, lose_acks=(), lose_commits=(), **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.lose_acks, self.lose_commits = set(lose_acks), set(lose_commits)
        self.batches = self.commits = 0
        self.republished: set[int] = set()  # seqs whose rows must go out twice

    async def publish_batch(self) -> int:
        self.batches += 1
        return await super().publish_batch()

    async def _send(self, rows) -> list:  # noqa: ANN001
        futures = await super()._send(rows)
        if self.batches not in self.lose_acks:
            return futures
        self.republished.update(json.loads(row[3])["data"]["seq"] for row in rows)

        async def lost() -> None:
            await asyncio.gather(*futures)  # the records did reach Kafka
            raise KafkaTimeoutError("acknowledgement lost (injected)")

        return [asyncio.ensure_future(lost())]

    async def _commit(self, lane, rows) -> None:  # noqa: ANN001
        self.commits += 1
        if self.commits not in self.lose_commits:
            return await super()._commit(lane, rows)
        await lane.end("ROLLBACK")
        self.republished.update(json.loads(row[3])["data"]["seq"] for row in rows)


async def test_the_pipelined_relay_publishes_each_row_once_in_key_order_even_after_failed_batches(
    bb_settings, bb_sessions, contract
):
    """Batches are claimed while the previous batch's commit runs: no row goes out twice unless
    its batch failed, and per key the events reach Kafka in outbox order, also when a batch's
    acknowledgements are lost (it is rolled back and published again) and when a commit is lost
    (its rows are published again after later batches)."""
    n, keys = 1200, 7
    async with bb_sessions() as session, session.begin():
        await emit_many(session, [(contract.model(seq=s), f"key-{s % keys}") for s in range(n)])
    settings = bb_settings.model_copy(update={"outbox_batch_size": 40})
    relay = FlakyRelay(settings, bb_sessions, lose_acks={3, 11}, lose_commits={6, 15})
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        records = await read_topic(bb_settings, topic_for(contract.type), n + 4 * 40)
    finally:
        stop.set()
        await task
    assert relay.batches > 20 and relay.commits > 15  # the faults really happened mid-stream
    seen: dict[int, int] = {}
    first_by_key: dict[bytes, list[int]] = {}
    for r in records:
        seq = json.loads(r.value)["data"]["seq"]
        if seq not in seen:
            first_by_key.setdefault(r.key, []).append(seq)
        seen[seq] = seen.get(seq, 0) + 1
    assert set(seen) == set(range(n))
    assert {s for s, c in seen.items() if c > 1} == relay.republished
    assert max(seen.values()) == 2
    assert len(relay.republished) == 4 * 40
    for key, seqs in first_by_key.items():
        assert seqs == sorted(seqs), key
    async with bb_sessions() as session:
        unpublished = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE topic = :t AND published_at IS NULL"),
            {"t": topic_for(contract.type)},
        )
    assert unpublished == 0


async def test_a_relay_idle_between_events_marks_them_when_it_claims_them(
    bb_settings, bb_sessions, contract
):
    """After each batch the relay begins its next transaction ahead of the claim; an event
    written after a quiet spell is still published, and its published_at is the claim's time,
    not that transaction's start."""
    topic = topic_for(contract.type)
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(bb_settings, bb_sessions).run(stop))

    async def published(seq: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with bb_sessions() as session:
                done = await session.scalar(
                    text(
                        "SELECT published_at IS NOT NULL FROM outbox WHERE topic = :t "
                        "AND (envelope->'data'->>'seq')::int = :s"
                    ),
                    {"t": topic, "s": seq},
                )
            if done:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"event {seq} was not published")

    try:
        for seq in range(6):
            await emit_items(bb_sessions, contract, [seq])
            await published(seq)
            # The relay sits idle: shorter than the poll interval (the NOTIFY wakes it and the
            # transaction begun ahead is used), then longer (the poll's empty claim ends it).
            await asyncio.sleep(0.4 if seq % 2 else 1.3)
    finally:
        stop.set()
        await task
    async with bb_sessions() as session:
        early = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE topic = :t AND published_at < created_at"),
            {"t": topic},
        )
    assert early == 0
    records = await read_topic(bb_settings, topic, 6)
    assert sorted(json.loads(r.value)["data"]["seq"] for r in records) == list(range(6))


async def test_the_relays_cycle_is_the_claim_and_one_more_round_trip(
    bb_settings, bb_sessions, contract, monkeypatch
):
    """Per batch, the relay's connection sees the claim and `COMMIT; BEGIN` (the mark committed
    and the next transaction begun in one simple-protocol query): no separate BEGIN, except the
    first on each connection."""
    import asyncpg
    from common.messaging import relay as relay_module

    sent: list[str] = []
    connect = asyncpg.connect

    async def logged_connect(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        conn = await connect(*args, **kwargs)
        if "-relay-" in kwargs.get("server_settings", {}).get("application_name", ""):
            conn.add_query_logger(lambda record: sent.append(record.query))
        return conn

    monkeypatch.setattr(relay_module.asyncpg, "connect", logged_connect)
    topic = topic_for(contract.type)
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(bb_settings, bb_sessions).run(stop))
    try:
        for seq in range(6):  # one at a time: six batches
            await emit_items(bb_sessions, contract, [seq])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                async with bb_sessions() as session:
                    left = await session.scalar(
                        text("SELECT count(*) FROM outbox WHERE topic = :t AND published_at IS NULL"),
                        {"t": topic},
                    )
                if not left:
                    break
                await asyncio.sleep(0.02)
            assert not left, f"event {seq} was not published"
    finally:
        stop.set()
        await task
    claims = [q for q in sent if q == relay_module._CLAIM]
    others = [q for q in sent if q != relay_module._CLAIM]
    assert len(claims) >= 6, sent
    assert set(others) <= {"BEGIN", "COMMIT; BEGIN", "ROLLBACK; BEGIN"}, others
    assert others.count("BEGIN") <= 2, sent  # one per lane connection
    assert others.count("COMMIT; BEGIN") >= 6, sent


async def test_the_consumers_transaction_claims_in_the_begins_round_trip(
    bb_settings, bb_sessions, contract, background
):
    """Per batch, the consumer's connection sees `BEGIN; INSERT INTO inbox ...` (the claim rides
    with the BEGIN), the handler's statement, then `COMMIT`: three round trips, no separate
    BEGIN. An id that would need escaping goes in quoted, and is handled once all the same."""
    from sqlalchemy import event

    engine = create_engine(bb_settings)  # the consumer's alone: every query logged is its own
    sent: list[str] = []

    @event.listens_for(engine.sync_engine.pool, "connect")
    def log_queries(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.driver_connection.add_query_logger(lambda r: sent.append(r.query))

    try:
        background.start(OutboxRelay(bb_settings, bb_sessions))
        consumer_sessions = create_session_factory(engine, bb_settings)
        background.start(
            backbone_proc.make_consumer(bb_settings, consumer_sessions, contract.type, f"g-{contract.type}")
        )
        for seq in range(3):  # one at a time: three transactions
            await emit_items(bb_sessions, contract, [seq])
            assert await wait_effects(bb_sessions, contract, seq + 1, 30) == (seq + 1, seq + 1)
        # An event whose id needs quoting (ids come from whoever produced the event).
        tricky = f"it's \\ a 'quoted' id {uuid.uuid4()}"
        envelope = EventEnvelope(
            type=contract.type, source="/test", subject="item-3", data=contract.model(seq=3), id=tricky
        )
        async with bb_sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO outbox (event_id, event_type, topic, key, envelope) "
                    "VALUES (:i, :t, :topic, :k, CAST(:e AS jsonb))"
                ),
                {
                    "i": tricky,
                    "t": contract.type,
                    "topic": topic_for(contract.type),
                    "k": "item-3",
                    "e": envelope.model_dump_json(by_alias=True),
                },
            )
        assert await wait_effects(bb_sessions, contract, 4, 30) == (4, 4)
    finally:
        await background.close()
        await engine.dispose()
    claims = [q for q in sent if q.startswith("BEGIN; INSERT INTO inbox")]
    assert len(claims) >= 4, sent
    assert sent.count("COMMIT") >= 4, sent
    assert any("E'it''s \\\\ a ''quoted'' id " in q for q in claims), claims
    assert not [q for q in sent if q.strip().rstrip(";") == "BEGIN"], sent


class HeldPurge(OutboxRelay):
    """The real relay, its purge held open until the test lets it finish."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.purging, self.finish = asyncio.Event(), asyncio.Event()

    async def _purge(self) -> None:
        self.purging.set()
        await self.finish.wait()


async def test_the_relay_keeps_publishing_while_its_purge_runs(bb_settings, bb_sessions, contract):
    """A purge working off a backlog takes seconds; run inline, it held every event back."""
    relay = HeldPurge(bb_settings, bb_sessions)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.wait_for(relay.purging.wait(), 20)
        await emit_items(bb_sessions, contract, range(5))
        records = await read_topic(bb_settings, topic_for(contract.type), 5)
        assert not relay.finish.is_set()  # published while the purge was still under way
        assert sorted(json.loads(r.value)["data"]["seq"] for r in records) == list(range(5))
    finally:
        relay.finish.set()
        stop.set()
        await task


async def test_the_purge_deletes_published_events_past_their_keep_and_nothing_else(
    bb_settings, bb_sessions, contract
):
    await emit_items(bb_sessions, contract, range(6))
    topic = topic_for(contract.type)
    seq = "(envelope->'data'->>'seq')::int"
    async with bb_sessions() as session, session.begin():
        # 0-1 published two days ago, 2-3 just now, 4-5 not yet.
        await session.execute(
            text(f"UPDATE outbox SET published_at = now() - interval '2 days' WHERE topic = :t AND {seq} < 2"),
            {"t": topic},
        )
        await session.execute(
            text(f"UPDATE outbox SET published_at = now() WHERE topic = :t AND {seq} IN (2, 3)"), {"t": topic}
        )
    await OutboxRelay(bb_settings, bb_sessions, keep_published_s=36 * 3600)._purge()
    async with bb_sessions() as session:
        left = (await session.execute(text(f"SELECT {seq} FROM outbox WHERE topic = :t"), {"t": topic})).scalars()
        assert sorted(left) == [2, 3, 4, 5]
        # The unpublished ones out of the way of later tests.
        await session.execute(text("DELETE FROM outbox WHERE topic = :t"), {"t": topic})
        await session.commit()


async def test_two_relays_on_one_outbox_never_publish_a_row_twice(
    bb_settings, bb_sessions, contract
):
    n = 3000
    await emit_items(bb_sessions, contract, range(n), per_tx=500, bulk=True)
    settings = bb_settings.model_copy(update={"outbox_batch_size": 50})
    stop = asyncio.Event()
    tasks = [asyncio.create_task(OutboxRelay(settings, bb_sessions).run(stop)) for _ in range(2)]
    try:
        records = await read_topic(bb_settings, topic_for(contract.type), n)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    seqs = [json.loads(r.value)["data"]["seq"] for r in records]
    assert sorted(seqs) == list(range(n))


async def test_the_pipelined_consumer_keeps_per_key_order_and_commits_every_offset(
    bb_settings, bb_sessions, contract
):
    """Partitions run side by side and fetching goes on while handlers run: per key the
    handlers still see the events in order, each once, and when the runner stops, the offset of
    every handled record is committed."""
    n, keys = 900, 9
    handled: list[tuple[str, int]] = []
    group = f"g-{contract.type}"

    async def handler(session, envelope) -> None:  # noqa: ANN001
        if envelope.data.seq % 97 == 0:
            await asyncio.sleep(0.05)  # a partition that lags now and then
        await backbone_proc.record_effect(session, envelope)

    def on_committed(envelopes) -> None:  # noqa: ANN001
        handled.extend((e.subject, e.data.seq) for e in envelopes)

    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(OutboxRelay(bb_settings, bb_sessions).run(stop)),
        asyncio.create_task(
            EventConsumer(
                bb_settings, bb_sessions, group, {contract.type: handler}, on_committed=on_committed
            ).run(stop)
        ),
    ]
    try:
        for start in range(0, n, 30):
            async with bb_sessions() as session, session.begin():
                await emit_many(
                    session,
                    [(contract.model(seq=s), f"key-{s % keys}") for s in range(start, start + 30)],
                )
            await asyncio.sleep(0.005)
        assert await wait_effects(bb_sessions, contract, n, 60) == (n, n)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert len(handled) == n
    by_key: dict[str, list[int]] = {}
    for key, seq in handled:
        by_key.setdefault(key, []).append(seq)
    assert len(by_key) == keys
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), key
    reader = make_consumer(bb_settings, group)
    await reader.start()
    try:
        tps = [TopicPartition(topic_for(contract.type), p) for p in range(3)]
        ends = await reader.end_offsets(tps)
        committed = {tp: await reader.committed(tp) for tp in tps}
    finally:
        await reader.stop()
    assert committed == ends


@pytest.mark.slow
async def test_broker_restart_during_a_stream_of_1000_events_loses_none(
    bb_settings, bb_sessions, contract, background
):
    background.start(OutboxRelay(bb_settings, bb_sessions))
    background.start(
        backbone_proc.make_consumer(bb_settings, bb_sessions, contract.type, f"g-{contract.type}")
    )

    async def stream() -> None:
        for start in range(0, 1000, 20):
            await emit_items(bb_sessions, contract, range(start, start + 20))
            await asyncio.sleep(0.1)

    emitter = asyncio.create_task(stream())
    await asyncio.sleep(1.5)
    restart = await asyncio.to_thread(devstack, "ctl", "restart", "kafka", check=False)
    assert "started" in restart.stdout, restart.stdout + restart.stderr
    await emitter
    assert await wait_effects(bb_sessions, contract, 1000, 180) == (1000, 1000)


# -- dead letters ----------------------------------------------------------------------------


async def test_bad_events_go_to_the_dlq_with_a_reason_and_consumption_goes_on(
    bb_settings, bb_sessions, contract, background
):
    topic = topic_for(contract.type)
    background.start(
        backbone_proc.make_consumer(bb_settings, bb_sessions, contract.type, f"g-{contract.type}")
    )
    good = {
        "specversion": "1.0", "id": "good-1", "source": "/test", "type": contract.type,
        "time": "2026-01-01T00:00:00Z", "subject": "k", "data": {"seq": 1},
    }
    bad = [
        b"{not json",
        json.dumps({**good, "id": "v99", "type": contract.type.replace(".v1", ".v99")}).encode(),
        json.dumps({**good, "id": "nodata", "data": {"seq": "not-a-number"}}).encode(),
        json.dumps({**good, "id": "poison", "data": {"seq": 2, "body": "poison"}}).encode(),
    ]
    producer = make_producer(bb_settings)
    await producer.start()
    try:
        for value in [*bad, json.dumps(good).encode()]:
            await producer.send_and_wait(topic, value, key=b"same-key")  # one partition, in order
    finally:
        await producer.stop()

    assert await wait_effects(bb_sessions, contract, 1, 60) == (1, 1)

    dlq = make_consumer(bb_settings, f"dlq-reader-{contract.type}", dlq_topic(topic))
    await dlq.start()
    reasons = {}
    try:
        deadline = time.monotonic() + 30
        while len(reasons) < 4 and time.monotonic() < deadline:
            for records in (await dlq.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = dict(r.headers)
                    reasons[headers["dlq-source-offset"]] = headers["dlq-reason"].decode()
                    assert headers["dlq-source-topic"].decode() == topic
    finally:
        await dlq.stop()
    found = sorted(reasons.values())
    assert len(found) == 4, found
    assert any(r.startswith("malformed: not JSON") for r in found)
    assert any(r.startswith("unknown version") for r in found)
    assert any(r.startswith("malformed:") and "seq" in r for r in found)
    assert any(r.startswith("handler failed after retries") and "poison" in r for r in found)


@pytest.mark.slow
async def test_database_restart_during_a_stream_loses_nothing_and_doubles_nothing(
    bb_settings, bb_sessions, contract, background
):
    background.start(OutboxRelay(bb_settings, bb_sessions))
    background.start(
        backbone_proc.make_consumer(bb_settings, bb_sessions, contract.type, f"g-{contract.type}")
    )
    written = 0

    async def stream() -> None:
        nonlocal written
        for start in range(0, 600, 20):
            while True:  # a writer whose database went away retries its transaction
                try:
                    await emit_items(bb_sessions, contract, range(start, start + 20))
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.3)
            written += 20
            await asyncio.sleep(0.05)

    emitter = asyncio.create_task(stream())
    while written < 200:
        await asyncio.sleep(0.05)
    restart = await asyncio.to_thread(devstack, "ctl", "restart", "postgres", check=False)
    assert "started" in restart.stdout, restart.stdout + restart.stderr
    await emitter
    assert await wait_effects(bb_sessions, contract, 600, 120) == (600, 600)


def test_database_outages_are_transient_and_bad_data_is_not():
    import asyncpg
    from common.messaging.consumer import is_transient
    from sqlalchemy import exc as sa_exc

    def wrapped(cause: Exception) -> sa_exc.DBAPIError:
        try:
            try:
                raise cause
            except Exception as inner:
                raise sa_exc.DBAPIError("stmt", {}, inner) from inner
        except sa_exc.DBAPIError as outer:
            return outer

    assert is_transient(wrapped(asyncpg.CannotConnectNowError("the database system is shutting down")))
    assert is_transient(wrapped(asyncpg.AdminShutdownError("terminating connection")))
    assert is_transient(wrapped(ConnectionResetError()))
    assert not is_transient(wrapped(asyncpg.UniqueViolationError("duplicate key")))
    assert not is_transient(ValueError("poison pill"))
