"""The send service against the real messaging schema, each test rolled back: what a send
stores (messages, first history row, conversations, one sms.requested event per message),
recipients resolved and de-duplicated, opt-outs skipped, refusals that store nothing, and the
caller's id (seed 003 uuid) that makes a send idempotent."""

from __future__ import annotations

import uuid

import pytest
from common.auth import Principal
from common.errors import AppError
from messaging.settings import MessagingSettings
from messaging.sms import service
from messaging.sms.repository import BIG_SEND_FROM
from sqlalchemy import text

from tests.support import random_phone, rollback_session

SETTINGS = MessagingSettings()


def tenant() -> Principal:
    return Principal(user_id=str(uuid.uuid4()), tenant_id=str(uuid.uuid4()), roles=("OWNER",))


async def add_contact(session, who: Principal, phone: str) -> uuid.UUID:
    contact_id = uuid.uuid4()
    await session.execute(
        text("INSERT INTO contacts (id, tenant_id, name, phone) VALUES (:i, :t, 'C', :p)"),
        {"i": contact_id, "t": uuid.UUID(who.tenant_id), "p": phone},
    )
    return contact_id


async def stored(session, who: Principal) -> list:
    rows = await session.execute(
        text(
            "SELECT m.id, m.to_number, m.from_number, m.status, m.billing, m.segments, m.encoding, m.contact_id,"
            " m.next_attempt_at, c.our_number, c.peer_number,"
            " (SELECT array_agg(h.status ORDER BY h.id) FROM message_status_history h WHERE h.message_id = m.id) AS history,"
            " (SELECT array_agg(o.envelope->'data' ORDER BY o.id) FROM outbox o WHERE o.key = m.id::text) AS events"
            " FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.tenant_id = :t ORDER BY m.id"
        ),
        {"t": uuid.UUID(who.tenant_id)},
    )
    return rows.all()


async def refused(session, who: Principal, code: str, **kwargs) -> AppError:
    with pytest.raises(AppError) as caught:
        await service.send(session, SETTINGS, who, **kwargs)
    assert caught.value.code == code, (caught.value.code, caught.value.details)
    assert caught.value.status_code == 422
    assert await stored(session, who) == []
    return caught.value


async def test_a_send_stores_one_queued_message_per_recipient_with_history_conversation_and_event():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        ann, bob = "+14155552671", random_phone()
        ann_id = await add_contact(session, who, ann)
        sent = await service.send(
            session, SETTINGS, who, text="Hello!", recipients=[str(ann_id), bob, "+1 (415) 555-2671", bob]
        )
        result = sent.result
        # Ann named twice (by contact id, then as a typed number), Bob twice: each sent once.
        assert [(m.to, m.contact_id) for m in result.messages] == [(ann, ann_id), (bob, None)]
        assert [(s.to, s.reason) for s in result.skipped] == [(ann, "duplicate"), (bob, "duplicate")]
        assert (result.count, result.segments, result.encoding, result.sender) == (2, 1, "GSM-7", SETTINGS.sms_default_sender)

        rows = await stored(session, who)
        assert [r.id for r in rows] == [m.id for m in result.messages]
        for row in rows:
            assert (row.status, row.billing, row.segments, row.next_attempt_at) == ("queued", "pending", 1, None)
            assert (row.our_number, row.peer_number) == (SETTINGS.sms_default_sender, row.to_number)
            assert row.history == ["queued"]
            [event] = row.events
            assert event == {
                "messageId": str(row.id), "tenantId": who.tenant_id, "to": row.to_number,
                "country": "US", "segments": 1, "route": "standard",
            }


async def test_a_second_send_to_a_number_reuses_its_conversation():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        phone = random_phone()
        await service.send(session, SETTINGS, who, text="one", recipients=[phone])
        await service.send(session, SETTINGS, who, text="two", recipients=[phone])
        count = await session.scalar(
            text("SELECT count(*) FROM conversations WHERE tenant_id = :t"), {"t": uuid.UUID(who.tenant_id)}
        )
        assert count == 1 and len(await stored(session, who)) == 2


@pytest.mark.parametrize(
    ("message", "segments", "encoding"),
    [("a" * 160, 1, "GSM-7"), ("a" * 161, 2, "GSM-7"), ("€" * 80, 1, "GSM-7"), ("Hi 😀", 1, "UCS-2"),
     ("😀" * 35, 1, "UCS-2"), ("😀" * 36, 2, "UCS-2"), ("a" * 1530, 10, "GSM-7")],
)
async def test_segments_and_encoding_are_those_of_the_text(message, segments, encoding):
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        result = (await service.send(session, SETTINGS, who, text=message, recipients=[random_phone()])).result
        assert (result.segments, result.encoding) == (segments, encoding)
        [row] = await stored(session, who)
        assert (row.segments, row.encoding, row.events[0]["segments"]) == (segments, encoding, segments)


async def test_opted_out_numbers_are_skipped_and_a_send_to_nobody_else_queues_nothing():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        out, ok = random_phone(), random_phone()
        await session.execute(
            text("INSERT INTO opt_outs (tenant_id, phone, keyword) VALUES (:t, :p, 'STOP')"),
            {"t": uuid.UUID(who.tenant_id), "p": out},
        )
        result = (await service.send(session, SETTINGS, who, text="hi", recipients=[out, ok])).result
        assert [m.to for m in result.messages] == [ok]
        assert [(s.to, s.reason) for s in result.skipped] == [(out, "opted_out")]

        alone = (await service.send(session, SETTINGS, who, text="hi", recipients=[out])).result
        assert (alone.count, alone.messages, [s.reason for s in alone.skipped]) == (0, [], ["opted_out"])
        # Seeds 002/003 send to one number: there, an opted-out recipient is a refusal.
        with pytest.raises(AppError) as caught:
            await service.send_one(session, SETTINGS, who, to=out, text="hi")
        assert caught.value.code == "RECIPIENT_OPTED_OUT"
        assert len(await stored(session, who)) == 1


async def test_refusals_store_nothing():
    who, other = tenant(), tenant()
    async with rollback_session(SETTINGS) as session:
        foreign = await add_contact(session, other, random_phone())
        phone = random_phone()
        await refused(session, who, "EMPTY_MESSAGE", text="", recipients=[phone])
        await refused(session, who, "EMPTY_MESSAGE", text="  \n ", recipients=[phone])
        await refused(session, who, "MESSAGE_TOO_LONG", text="a" * 1601, recipients=[phone])
        await refused(session, who, "TOO_MANY_SEGMENTS", text="a" * 1531, recipients=[phone])
        await refused(session, who, "NO_RECIPIENTS", text="hi", recipients=[])
        error = await refused(session, who, "TOO_MANY_RECIPIENTS", text="hi", recipients=[phone] * 10_001)
        assert error.details == {"count": 10_001, "max": 10_000}
        error = await refused(session, who, "INVALID_RECIPIENTS", text="hi", recipients=[phone, "12345", "+1415555"])
        assert error.details == {"count": 2, "listed": ["12345", "+1415555"]}
        missing = str(uuid.uuid4())
        error = await refused(session, who, "UNKNOWN_CONTACTS", text="hi", recipients=[phone, str(foreign), missing])
        assert error.details == {"count": 2, "listed": [str(foreign), missing]}
        await refused(session, who, "SENDER_NOT_OWNED", text="hi", recipients=[phone], sender=random_phone())
        await refused(session, who, "SENDER_NOT_OWNED", text="hi", recipients=[phone], sender="not a number")


async def test_a_sender_must_be_one_of_the_tenants_numbers_or_the_platforms():
    who, other = tenant(), tenant()
    async with rollback_session(SETTINGS) as session:
        mine, theirs = random_phone(), random_phone()
        for owner, number in ((who, mine), (other, theirs)):
            await session.execute(
                text("INSERT INTO sms_numbers (number, tenant_id) VALUES (:n, :t)"),
                {"n": number, "t": uuid.UUID(owner.tenant_id)},
            )
        sent = await service.send(session, SETTINGS, who, text="hi", recipients=[random_phone()], sender=mine)
        assert sent.result.sender == mine
        shared = await service.send(
            session, SETTINGS, who, text="hi", recipients=[random_phone()], sender=SETTINGS.sms_default_sender
        )
        assert shared.result.sender == SETTINGS.sms_default_sender
        assert {r.from_number for r in await stored(session, who)} == {mine, SETTINGS.sms_default_sender}
        with pytest.raises(AppError) as caught:
            await service.send(session, SETTINGS, who, text="hi", recipients=[random_phone()], sender=theirs)
        assert caught.value.code == "SENDER_NOT_OWNED"


async def test_a_callers_id_makes_a_send_idempotent():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        to = random_phone()
        first = await service.send_one(session, SETTINGS, who, to=to, text="once", external_id="abc-1")
        again = await service.send_one(session, SETTINGS, who, to=to, text="once", external_id="abc-1")
        assert not first.replayed and again.replayed
        assert again.result.messages[0].id == first.result.messages[0].id
        [row] = await stored(session, who)
        assert len(row.events) == 1 and row.history == ["queued"]
        with pytest.raises(AppError) as caught:
            await service.send_one(session, SETTINGS, who, to=to, text="something else", external_id="abc-1")
        assert caught.value.code == "UUID_REUSED"
        # Another tenant may use the same id.
        assert not (await service.send_one(session, SETTINGS, tenant(), to=to, text="once", external_id="abc-1")).replayed


async def test_a_big_send_plans_its_statement_for_its_own_arrays():
    """A connection that ran the send statement for small sends may switch to a generic plan
    costed for a few rows, which goes quadratic on thousands: a send of BIG_SEND_FROM or more
    destinations asks for a custom plan (and no JIT) in its transaction; a small one changes
    nothing."""
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        settings = text("SELECT current_setting('plan_cache_mode'), current_setting('jit')")
        await service.send(session, SETTINGS, who, text="hi", recipients=[random_phone()])
        assert tuple((await session.execute(settings)).one()) == ("auto", "on")
        phones = list(dict.fromkeys(random_phone() for _ in range(BIG_SEND_FROM + 20)))[:BIG_SEND_FROM]
        sent = await service.send(session, SETTINGS, who, text="hi", recipients=phones)
        assert sent.result.count == BIG_SEND_FROM
        assert tuple((await session.execute(settings)).one()) == ("force_custom_plan", "off")
