"""The status state machine against the real messaging schema (rolled back): forward only,
history and events for what moved, provider ids kept even when the status does not move."""

from __future__ import annotations

import uuid

from common.ids import uuid7
from messaging.settings import MessagingSettings
from messaging.sms import status as st
from sqlalchemy import text

from tests.support import rollback_session

SETTINGS = MessagingSettings()


async def new_message(session) -> uuid.UUID:
    tenant, conv, msg = uuid.uuid4(), uuid7(), uuid7()
    await session.execute(
        text("INSERT INTO conversations (id, tenant_id, our_number, peer_number) VALUES (:c, :t, '+18005550100', :p)"),
        {"c": conv, "t": tenant, "p": f"+1415555{str(msg.int)[-4:]}"},
    )
    await session.execute(
        text(
            "INSERT INTO messages (id, tenant_id, conversation_id, direction, from_number, to_number, body,"
            " encoding, segments, status, billing) VALUES (:m, :t, :c, 'outbound', '+18005550100', '+14155550123',"
            " 'hi', 'GSM-7', 1, 'queued', 'reserved')"
        ),
        {"m": msg, "t": tenant, "c": conv},
    )
    await st.record_created(session, [msg], st.QUEUED)
    return msg


async def history(session, msg) -> list[str]:
    rows = await session.execute(
        text("SELECT status FROM message_status_history WHERE message_id = :m ORDER BY id"), {"m": msg}
    )
    return [r[0] for r in rows]


async def events(session, msg) -> list[str]:
    rows = await session.execute(
        text("SELECT envelope->'data'->>'status' FROM outbox WHERE key = :k ORDER BY id"),
        {"k": str(msg)},
    )
    return [r[0] for r in rows]


async def test_status_moves_forward_only_and_each_move_is_recorded_once():
    async with rollback_session(SETTINGS) as session:
        msg = await new_message(session)
        moved = await st.apply(session, [st.Change(msg, st.SENT, provider="simulator", provider_message_id="p1")])
        assert [(m.old_status, m.status) for m in moved] == [("queued", "sent")]
        # A repeat, a late "sent" and a "failed" after "delivered" all change nothing.
        await st.apply(session, [st.Change(msg, st.DELIVERED)])
        assert await st.apply(session, [st.Change(msg, st.DELIVERED)]) == []
        assert await st.apply(session, [st.Change(msg, st.SENT)]) == []
        assert await st.apply(session, [st.Change(msg, st.FAILED, error="late")]) == []
        row = (await session.execute(text("SELECT * FROM messages WHERE id = :m"), {"m": msg})).one()
        assert (row.status, row.provider, row.provider_message_id, row.error) == ("delivered", "simulator", "p1", None)
        assert row.sent_at is not None and row.delivered_at is not None
        assert await history(session, msg) == ["queued", "sent", "delivered"]
        assert await events(session, msg) == ["sent", "delivered"]


async def test_a_report_that_overtakes_the_dispatcher_keeps_the_provider_id_written_later():
    async with rollback_session(SETTINGS) as session:
        msg = await new_message(session)
        await st.apply(session, [st.Change(msg, st.DELIVERED, detail="report")])
        moved = await st.apply(session, [st.Change(msg, st.SENT, provider="simulator", provider_message_id="p2")])
        assert moved == []
        row = (await session.execute(text("SELECT status, provider_message_id FROM messages WHERE id = :m"), {"m": msg})).one()
        assert tuple(row) == ("delivered", "p2")


async def test_one_batch_may_carry_several_changes_for_one_message_in_order():
    async with rollback_session(SETTINGS) as session:
        a, b = await new_message(session), await new_message(session)
        moved = await st.apply(
            session, [st.Change(a, st.SENT), st.Change(b, st.FAILED, error="UNDELIVERABLE"), st.Change(a, st.DELIVERED)]
        )
        assert sorted((str(m.message_id), m.status) for m in moved) == sorted(
            [(str(a), "sent"), (str(b), "failed"), (str(a), "delivered")]
        )
        assert await history(session, a) == ["queued", "sent", "delivered"]
        assert await history(session, b) == ["queued", "failed"]
        row = (await session.execute(text("SELECT error, next_attempt_at FROM messages WHERE id = :m"), {"m": b})).one()
        assert tuple(row) == ("UNDELIVERABLE", None)


async def test_a_parked_report_is_applied_when_the_provider_id_is_recorded():
    async with rollback_session(SETTINGS) as session:
        msg = await new_message(session)
        pmid = f"early-{uuid.uuid4().hex}"
        await st.park_reports(session, "simulator", [st.Parked(pmid, st.SENT), st.Parked(pmid, st.DELIVERED)])
        await st.apply(session, [st.Change(msg, st.SENT, provider="simulator", provider_message_id=pmid)])
        moved = await st.resolve_pending(session, [(msg, "simulator", pmid)])
        assert [m.status for m in moved] == ["delivered"]
        assert await history(session, msg) == ["queued", "sent", "delivered"]
        left = await session.execute(
            text("SELECT count(*) FROM pending_delivery_reports WHERE provider_message_id = :p"), {"p": pmid}
        )
        assert left.scalar() == 0
        # Nothing parked for it any more: resolving again changes nothing.
        assert await st.resolve_pending(session, [(msg, "simulator", pmid)]) == []


async def test_moves_says_what_apply_does_for_every_pair_of_statuses():
    """The webhook path skips reports `moves` calls no-ops without running `apply`: the two
    must agree on every (current, new) pair."""
    reach = {st.QUEUED: [], st.SENT: [st.SENT], st.DELIVERED: [st.DELIVERED],
             st.FAILED: [st.FAILED], st.REJECTED: [st.REJECTED]}
    async with rollback_session(SETTINGS) as session:
        for current, path in reach.items():
            for new in (st.SENT, st.DELIVERED, st.FAILED, st.REJECTED):
                msg = await new_message(session)
                for status in path:
                    await st.apply(session, [st.Change(msg, status)])
                moved = await st.apply(session, [st.Change(msg, new)])
                assert bool(moved) == st.moves(current, new), (current, new)
