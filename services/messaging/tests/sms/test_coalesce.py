"""The send coalescer against the real messaging schema: concurrent sends written together, each
caller answered with its own outcome, and one send's failure kept to that send. What it commits
is kept (the tenants are new and random; their events are rejected by billing, no account)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from common.auth import Principal
from common.db import create_engine
from messaging.settings import MessagingSettings
from messaging.sms import service
from messaging.sms.coalesce import WRITER_APPLICATION_NAME, WRITER_SERVER_SETTINGS, SendCoalescer
from sqlalchemy import text

from tests.support import random_phone, sessions_fixture, superuser

SETTINGS = MessagingSettings(db_pool_size=4)
sessions = sessions_fixture(lambda: SETTINGS)


def tenant() -> Principal:
    return Principal(user_id=str(uuid.uuid4()), tenant_id=str(uuid.uuid4()), roles=("OWNER",))


def writer_engine(name: str = WRITER_APPLICATION_NAME):
    return create_engine(SETTINGS, pool_size=1, server_settings={**WRITER_SERVER_SETTINGS, "application_name": name})


@pytest.fixture
async def coalescer():
    engine = writer_engine()
    writer = SendCoalescer(engine, writers=1)
    await writer.start()
    yield writer
    await writer.stop()
    await engine.dispose()


async def send(sessions, writer, who, **kwargs):
    """A request's view: its own (unused for writing) session, the coalescer for the write."""
    async with sessions() as session:
        return await service.send(session, SETTINGS, who, writer=writer, **kwargs)


async def stored(sessions, who: Principal) -> list:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT m.id, m.to_number, m.from_number, m.body, c.peer_number,"
                " (SELECT h.status FROM message_status_history h WHERE h.message_id = m.id ORDER BY h.id LIMIT 1)"
                "  AS first_status"
                " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE m.tenant_id = :t ORDER BY m.id"
            ),
            {"t": who.tenant_uuid},
        )
        return rows.all()


async def requested(sessions, ids: list[uuid.UUID]) -> dict[str, int]:
    """messaging.sms.requested.v1 events in the outbox per message id (one scan of the outbox)."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT key, count(*) AS n FROM outbox WHERE key = ANY(:keys)"
                " AND event_type = 'messaging.sms.requested.v1' GROUP BY key"
            ),
            {"keys": [str(i) for i in ids]},
        )
        return {row.key: row.n for row in rows}


async def test_concurrent_sends_are_written_in_batches_and_each_caller_gets_its_own_messages(sessions, coalescer):
    tenants = [tenant() for _ in range(4)]
    jobs = [(tenants[i % 4], f"text {i}", [random_phone(), random_phone()]) for i in range(60)]
    results = await asyncio.gather(
        *(send(sessions, coalescer, who, text=body, recipients=phones) for who, body, phones in jobs)
    )

    assert coalescer.batches < len(jobs)  # written together, not one by one
    assert coalescer.largest > 1
    for (_, _, phones), sent in zip(jobs, results, strict=True):
        assert [m.to for m in sent.result.messages] == phones
        assert sent.result.count == 2 and sent.result.skipped == []
    events = requested(sessions, [m.id for sent in results for m in sent.result.messages])
    assert sorted((await events).values()) == [1] * 120
    for who in tenants:
        rows = await stored(sessions, who)
        mine = [(body, phones) for t, body, phones in jobs if t is who]
        expected = {(phone, body) for body, phones in mine for phone in phones}
        assert {(r.to_number, r.body) for r in rows} == expected
        ids = {m.id for (t, _, _), sent in zip(jobs, results, strict=True) if t is who for m in sent.result.messages}
        assert {r.id for r in rows} == ids
        # (The running stack moves them on: billing rejects these unfunded tenants.)
        assert all(r.first_status == "queued" for r in rows)


async def test_sends_to_one_number_in_one_batch_share_its_conversation(sessions, coalescer):
    who, phone = tenant(), random_phone()
    results = await asyncio.gather(
        *(send(sessions, coalescer, who, text=f"hello {i}", recipients=[phone]) for i in range(10))
    )
    assert all(r.result.count == 1 for r in results)
    rows = await stored(sessions, who)
    assert len(rows) == 10 and {r.peer_number for r in rows} == {phone}
    async with sessions() as session:
        conversations = await session.scalar(
            text("SELECT count(*) FROM conversations WHERE tenant_id = :t"), {"t": who.tenant_uuid}
        )
    assert conversations == 1


async def test_a_sender_the_tenant_does_not_own_refuses_only_that_send(sessions, coalescer):
    honest, other = tenant(), tenant()
    stranger = random_phone()  # nobody's number
    outcomes = await asyncio.gather(
        send(sessions, coalescer, honest, text="ok", recipients=[random_phone()]),
        send(sessions, coalescer, other, text="spoof", recipients=[random_phone()], sender=stranger),
        return_exceptions=True,
    )
    assert outcomes[0].result.count == 1
    assert getattr(outcomes[1], "code", None) == "SENDER_NOT_OWNED"
    assert len(await stored(sessions, honest)) == 1
    assert await stored(sessions, other) == []


async def test_the_same_caller_id_twice_in_one_batch_stores_one_message_and_replays_it(sessions, coalescer):
    who, phone = tenant(), random_phone()
    first, second = await asyncio.gather(
        *(
            service_send_one(sessions, coalescer, who, to=phone, text="once", external_id="same-uuid-1")
            for _ in range(2)
        )
    )
    assert sorted([first.replayed, second.replayed]) == [False, True]
    assert first.result.messages[0].id == second.result.messages[0].id
    assert len(await stored(sessions, who)) == 1


async def service_send_one(sessions, writer, who, **kwargs):
    async with sessions() as session:
        return await service.send_one(session, SETTINGS, who, writer=writer, **kwargs)


async def test_a_send_that_breaks_the_statement_fails_alone_and_the_rest_of_its_batch_is_written(
    sessions, coalescer
):
    who = tenant()
    good = [send(sessions, coalescer, who, text=f"fine {i}", recipients=[random_phone()]) for i in range(5)]
    # A send the service would never build (11 segments break the messages table's check): the
    # batch it lands in fails, and the coalescer writes each of its sends alone.
    new = await built(sessions, who)
    broken = coalescer.write(dataclasses.replace(new, segments=11))
    outcomes = await asyncio.gather(*good, broken, return_exceptions=True)
    assert coalescer.split == 1  # they were in one batch, which failed and was redone send by send
    assert all(o.result.count == 1 for o in outcomes[:5])
    assert isinstance(outcomes[5], Exception) and "segments" in str(outcomes[5])
    rows = await stored(sessions, who)
    assert len(rows) == 5 and all(r.body.startswith("fine") for r in rows)


async def built(sessions, who: Principal):
    """The NewMessages the service builds for a one-recipient send (captured, not written)."""
    captured = []

    class Capture:
        async def write(self, new):
            captured.append(new)
            raise LookupError("captured")

    async with sessions() as session:
        with pytest.raises(LookupError):
            await service.send(session, SETTINGS, who, text="broken", recipients=[random_phone()], writer=Capture())
    return captured[0]


async def test_stop_writes_what_is_waiting(sessions):
    engine = writer_engine()
    writer = SendCoalescer(engine, writers=1)
    await writer.start()
    who = tenant()
    pending = [asyncio.create_task(send(sessions, writer, who, text="late", recipients=[random_phone()])) for _ in range(20)]
    for _ in range(3):
        await asyncio.sleep(0)  # handed to the coalescer, not all written yet
    await writer.stop()
    assert all(sent.result.count == 1 for sent in await asyncio.gather(*pending))
    assert len(await stored(sessions, who)) == 20
    with pytest.raises(RuntimeError):
        await send(sessions, writer, who, text="too late", recipients=[random_phone()])
    await engine.dispose()


async def test_a_writer_whose_connection_was_killed_writes_the_next_send_on_a_new_one(sessions):
    name = f"coalesce-test-{uuid.uuid4().hex[:8]}"
    engine = writer_engine(name)
    writer = SendCoalescer(engine, writers=1)
    await writer.start()
    try:
        who = tenant()
        await send(sessions, writer, who, text="before", recipients=[random_phone()])
        async with superuser() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", name
            )
        assert killed == 1
        after = await send(sessions, writer, who, text="after", recipients=[random_phone()])
        assert after.result.count == 1
        assert sorted(r.body for r in await stored(sessions, who)) == ["after", "before"]
    finally:
        await writer.stop()
        await engine.dispose()


async def test_writers_plan_every_statement_for_its_own_arrays(sessions, coalescer):
    """A writer runs the statement for one destination and for thousands on one connection:
    custom plans only (a generic plan costed for a few rows goes quadratic on thousands), no JIT."""
    await send(sessions, coalescer, tenant(), text="hi", recipients=[random_phone()])
    [held] = coalescer.held
    row = (await held.conn.execute(text("SELECT current_setting('plan_cache_mode'), current_setting('jit')"))).one()
    assert tuple(row) == ("force_custom_plan", "off")
