"""The inbound service against the real messaging schema (each test rolled back): delivery
reports found by our id or the provider's, parked when neither is known; inbound messages routed
by the number that received them, stored once, with history, event and opt-out keywords; raw
webhooks processed once, unreadable ones kept with their reason."""

from __future__ import annotations

import json
import uuid

import pytest
from common.errors import Unprocessable
from common.ids import uuid7
from messaging.inbound import service
from messaging.inbound.schemas import ReceiveSmsCreate
from messaging.providers.base import DeliveryReport, DeliveryStatus, webhook_signature
from messaging.providers.http_gateway import HttpGatewayProvider
from messaging.settings import MessagingSettings
from messaging.sms import status as st
from sqlalchemy import text

from tests.support import random_phone, rollback_session

SETTINGS = MessagingSettings()
SENDER = "+18005550100"
SIM = HttpGatewayProvider("simulator", base_url="http://127.0.0.1:1", api_key="k", webhook_secrets=("s",))
PROVIDERS = {"simulator": SIM}


async def apply_reports(session, provider: str, reports) -> str:  # noqa: ANN001
    """The reports of one webhook through the worker's batch path: its outcome phrase."""
    return (await service.apply_reports(session, provider, [(r, None) for r in reports]))[None]


async def process_webhook(session, providers, webhook_id: uuid.UUID) -> str | None:  # noqa: ANN001
    """One stored webhook through the worker's batch path: its outcome."""
    return (await service.process_webhooks(session, providers, [webhook_id]))[webhook_id]


async def outbound(session, *, provider: str | None = None, pmid: str | None = None) -> uuid.UUID:
    tenant, conv, msg = uuid.uuid4(), uuid7(), uuid7()
    await session.execute(
        text("INSERT INTO conversations (id, tenant_id, our_number, peer_number) VALUES (:c, :t, :o, :p)"),
        {"c": conv, "t": tenant, "o": SENDER, "p": random_phone()},
    )
    await session.execute(
        text(
            "INSERT INTO messages (id, tenant_id, conversation_id, direction, from_number, to_number, body,"
            " encoding, segments, status, billing, provider, provider_message_id) VALUES (:m, :t, :c, 'outbound',"
            " :o, '+14155550123', 'hi', 'GSM-7', 1, 'queued', 'reserved', :prov, :pmid)"
        ),
        {"m": msg, "t": tenant, "c": conv, "o": SENDER, "prov": provider, "pmid": pmid},
    )
    await st.record_created(session, [msg], st.QUEUED)
    return msg


async def history(session, msg) -> list[tuple[str, str | None]]:
    rows = await session.execute(
        text("SELECT status, detail FROM message_status_history WHERE message_id = :m ORDER BY id"), {"m": msg}
    )
    return [tuple(r) for r in rows]


async def message(session, msg):  # noqa: ANN201
    return (await session.execute(text("SELECT * FROM messages WHERE id = :m"), {"m": msg})).one()


async def parked(session, pmid: str) -> list[str]:
    rows = await session.execute(
        text("SELECT status FROM pending_delivery_reports WHERE provider_message_id = :p ORDER BY id"), {"p": pmid}
    )
    return [r[0] for r in rows]


def report(pmid: str, status: str, ref: object = None, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(pmid, str(ref) if ref else None, DeliveryStatus(status), error)


def pmid() -> str:
    return f"sim_{uuid.uuid4().hex[:16]}"


# -- delivery reports --------------------------------------------------------------------------


async def test_reports_by_client_ref_move_the_status_and_record_the_provider_id():
    async with rollback_session(SETTINGS) as session:
        msg, p = await outbound(session), pmid()
        outcome = await apply_reports(
            session, "simulator", [report(p, "sent", msg), report(p, "delivered", msg)]
        )
        assert outcome == "reports: 2 (2 moved, 0 unchanged, 0 parked)"
        row = await message(session, msg)
        assert (row.status, row.provider, row.provider_message_id) == ("delivered", "simulator", p)
        assert await history(session, msg) == [
            ("queued", None), ("sent", "delivery report from simulator"), ("delivered", "delivery report from simulator")
        ]


async def test_a_duplicate_report_changes_nothing():
    async with rollback_session(SETTINGS) as session:
        p = pmid()
        msg = await outbound(session, provider="simulator", pmid=p)
        for _ in range(3):
            await apply_reports(session, "simulator", [report(p, "delivered")])
        assert [s for s, _ in await history(session, msg)] == ["queued", "delivered"]
        events = await session.execute(text("SELECT count(*) FROM outbox WHERE key = :k"), {"k": str(msg)})
        assert events.scalar() == 1


async def test_a_failed_report_keeps_the_error():
    async with rollback_session(SETTINGS) as session:
        msg, p = await outbound(session), pmid()
        await apply_reports(session, "simulator", [report(p, "failed", msg, "UNDELIVERABLE")])
        row = await message(session, msg)
        assert (row.status, row.error) == ("failed", "UNDELIVERABLE")


async def test_a_client_ref_that_is_no_outbound_message_falls_back_to_the_provider_id_then_parks():
    async with rollback_session(SETTINGS) as session:
        p_known, p_unknown = pmid(), pmid()
        msg = await outbound(session, provider="simulator", pmid=p_known)
        inbound = await service.receive(
            session, tenant_id=uuid.uuid4(), from_number=random_phone(), to_number=SENDER, text="hi",
            provider="simulator", provider_message_id=pmid(),
        )
        outcome = await apply_reports(
            session,
            "simulator",
            [
                report(p_known, "sent", "not-a-uuid"),  # found by the provider id
                report(p_unknown, "sent", inbound.message_id),  # names an inbound message: parked
                report(pmid(), "delivered", uuid7()),  # names no message at all: parked
            ],
        )
        assert outcome == "reports: 3 (1 moved, 0 unchanged, 2 parked)"
        assert (await message(session, msg)).status == "sent"
        assert await parked(session, p_unknown) == ["sent"]
        assert [s for s, _ in await history(session, inbound.message_id)] == ["received"]


async def test_a_parked_report_is_applied_when_the_dispatcher_records_the_provider_id():
    async with rollback_session(SETTINGS) as session:
        msg, p = await outbound(session), pmid()
        await apply_reports(session, "simulator", [report(p, "sent"), report(p, "delivered")])
        assert await parked(session, p) == ["sent", "delivered"]
        assert (await message(session, msg)).status == "queued"
        # The dispatcher stores the provider id and resolves what waited for it.
        await st.apply(session, [st.Change(msg, st.SENT, provider="simulator", provider_message_id=p)])
        await st.resolve_pending(session, [(msg, "simulator", p)])
        assert (await message(session, msg)).status == "delivered"
        assert await parked(session, p) == []


async def test_a_client_ref_report_does_not_overwrite_the_provider_id_the_dispatcher_recorded():
    async with rollback_session(SETTINGS) as session:
        recorded, other = pmid(), pmid()
        msg = await outbound(session, provider="sns", pmid=recorded)  # failed over after a maybe-sent
        taken = await outbound(session, provider="simulator", pmid=other)
        await apply_reports(session, "simulator", [report(other, "delivered", msg)])
        row = await message(session, msg)
        assert (row.status, row.provider, row.provider_message_id) == ("delivered", "sns", recorded)
        assert (await message(session, taken)).status == "queued"  # the id it named is not its message


async def test_a_thousand_reports_apply_in_one_call():
    async with rollback_session(SETTINGS) as session:
        msgs = [await outbound(session) for _ in range(1000)]
        reports = [report(f"bulk-{i}", "sent", m) for i, m in enumerate(msgs)]
        reports += [report(f"bulk-{i}", "delivered", m) for i, m in enumerate(msgs)]
        assert await apply_reports(session, "simulator", reports) == "reports: 2000 (2000 moved, 0 unchanged, 0 parked)"
        count = await session.execute(
            text("SELECT count(*) FROM messages WHERE id = ANY(:ids) AND status = 'delivered'"), {"ids": msgs}
        )
        assert count.scalar() == 1000


# -- inbound messages ------------------------------------------------------------------------------


async def own_number(session, tenant: uuid.UUID) -> str:
    number = random_phone()
    await session.execute(text("INSERT INTO sms_numbers (number, tenant_id) VALUES (:n, :t)"), {"n": number, "t": tenant})
    return number


async def opted_out(session, tenant, phone) -> bool:
    row = await session.execute(text("SELECT 1 FROM opt_outs WHERE tenant_id = :t AND phone = :p"), {"t": tenant, "p": phone})
    return row.first() is not None


async def test_an_inbound_message_lands_in_its_conversation_once_with_history_and_event():
    async with rollback_session(SETTINGS) as session:
        tenant = uuid.uuid4()
        ours, peer, p = await own_number(session, tenant), random_phone(), pmid()
        sms = {"type": "inbound", "id": p, "from": peer, "to": ours, "text": "Hello 👋"}
        [first] = await service.receive_from_provider(session, "simulator", SIM.parse_webhook(json.dumps(sms).encode())[1])
        [again] = await service.receive_from_provider(session, "simulator", SIM.parse_webhook(json.dumps(sms).encode())[1])
        assert first.startswith("received ") and again == first.replace("received", "duplicate")
        message_id = uuid.UUID(first.split()[1])
        row = await message(session, message_id)
        assert (row.tenant_id, row.direction, row.status, row.billing, row.from_number, row.to_number) == (
            tenant, "inbound", "received", "none", peer, ours
        )
        assert (row.body, row.encoding, row.segments, row.provider_message_id) == ("Hello 👋", "UCS-2", 1, p)
        conv = (await session.execute(text("SELECT * FROM conversations WHERE id = :c"), {"c": row.conversation_id})).one()
        assert (conv.tenant_id, conv.our_number, conv.peer_number) == (tenant, ours, peer)
        assert await history(session, message_id) == [("received", "received from simulator")]
        [event] = (
            await session.execute(
                text("SELECT envelope FROM outbox WHERE event_type = 'messaging.message.received.v1' AND key = :k"),
                {"k": str(row.conversation_id)},
            )
        ).scalars().all()
        assert event["data"]["messageId"] == str(message_id) and event["tenantid"] == str(tenant)


async def test_stop_and_start_opt_the_sender_out_and_back_in():
    async with rollback_session(SETTINGS) as session:
        tenant = uuid.uuid4()
        ours, peer = await own_number(session, tenant), random_phone()

        async def say(words: str) -> service.Received:
            return await service.receive(
                session, tenant_id=tenant, from_number=peer, to_number=ours, text=words,
                provider="simulator", provider_message_id=pmid(),
            )

        assert (await say(" Stop. ")).keyword == "stop"
        assert await opted_out(session, tenant, peer)
        assert (await say("please stop")).keyword is None
        assert await opted_out(session, tenant, peer)
        assert (await say("START")).keyword == "start"
        assert not await opted_out(session, tenant, peer)


async def test_an_inbound_message_to_a_number_nobody_owns_is_unroutable():
    async with rollback_session(SETTINGS) as session:
        nobody = random_phone()
        [outcome] = await service.receive_from_provider(
            session, "simulator",
            SIM.parse_webhook(json.dumps({"type": "inbound", "id": pmid(), "from": random_phone(), "to": nobody,
                                          "text": "hi"}).encode())[1],
        )
        assert outcome == f"unroutable: no tenant owns {nobody}"


async def test_a_provider_text_too_long_for_an_sms_is_cut_and_said_so_the_api_refuses_it():
    async with rollback_session(SETTINGS) as session:
        tenant = uuid.uuid4()
        ours, peer = await own_number(session, tenant), random_phone()
        received = await service.receive(
            session, tenant_id=tenant, from_number=peer, to_number=ours, text="a" * 2000 + "\x00",
            provider="simulator", provider_message_id=pmid(),
        )
        row = await message(session, received.message_id)
        assert (len(row.body), row.segments) == (1600, 10)
        assert await history(session, received.message_id) == [
            ("received", "received from simulator (text cut to 1600 of 2001 characters)")
        ]
        with pytest.raises(Unprocessable) as caught:
            await service.receive_from_api(
                session, tenant, ReceiveSmsCreate(sender_phone=peer, receiver_phone=ours, message_text="a" * 1601)
            )
        assert caught.value.code == "MESSAGE_TOO_LONG"


async def test_the_api_is_idempotent_by_the_callers_uuid_per_tenant():
    async with rollback_session(SETTINGS) as session:
        tenant, other = uuid.uuid4(), uuid.uuid4()
        data = ReceiveSmsCreate(sender_phone="14155552671", receiver_phone="+1 (212) 555-2368",
                                message_text="hi", timestamp=1_645_845_235, uuid="abc-1")
        first = await service.receive_from_api(session, tenant, data)
        again = await service.receive_from_api(session, tenant, data)
        elsewhere = await service.receive_from_api(session, other, data)
        assert (first.created, again.created, again.message_id) == (True, False, first.message_id)
        assert elsewhere.created and elsewhere.message_id != first.message_id
        row = await message(session, first.message_id)
        assert (row.from_number, row.to_number, row.external_id, row.provider) == (
            "+14155552671", "+12125552368", "abc-1", None
        )
        assert int(row.sent_at.timestamp()) == 1_645_845_235
        with pytest.raises(Unprocessable) as caught:
            await service.receive_from_api(
                session, tenant, ReceiveSmsCreate(sender_phone="0987654321", receiver_phone="+12125552368", message_text="x")
            )
        assert caught.value.code == "INVALID_PHONE"
        # The same uuid for another text (or naming one of the tenant's sent messages) is refused.
        with pytest.raises(Unprocessable) as caught:
            await service.receive_from_api(session, tenant, data.model_copy(update={"message_text": "other"}))
        assert caught.value.code == "UUID_REUSED"


# -- stored webhooks -------------------------------------------------------------------------------


async def stored(session, body: bytes) -> uuid.UUID:
    url = "http://127.0.0.1:8080/api/v1/webhooks/sms/simulator"
    headers = {"x-signature": webhook_signature("s", url, body), "content-type": "application/json"}
    return await service.store_webhook(session, SIM, url, headers, body)


async def test_a_stored_webhook_is_processed_once():
    async with rollback_session(SETTINGS) as session:
        msg, p = await outbound(session), pmid()
        webhook = await stored(session, json.dumps({"id": p, "clientRef": str(msg), "status": "delivered"}).encode())
        assert await process_webhook(session, PROVIDERS, webhook) == "reports: 1 (1 moved, 0 unchanged, 0 parked)"
        assert await process_webhook(session, PROVIDERS, webhook) is None
        row = (await session.execute(text("SELECT * FROM provider_webhooks WHERE id = :w"), {"w": webhook})).one()
        assert row.processed_at is not None and row.headers["content-type"] == "application/json"


async def test_a_run_of_webhooks_is_applied_together_in_order_each_with_its_own_outcome():
    """What the worker's batch handler does with a bulk send's reports arriving as many webhooks."""
    async with rollback_session(SETTINGS) as session:
        first, second, p1, p2 = await outbound(session), await outbound(session), pmid(), pmid()
        sent = await stored(session, json.dumps([
            {"id": p1, "clientRef": str(first), "status": "sent"},
            {"id": p2, "clientRef": str(second), "status": "delivered"},
        ]).encode())
        delivered = await stored(session, json.dumps([
            {"id": p1, "clientRef": str(first), "status": "delivered"},  # after its `sent`, one batch later
            {"id": p2, "clientRef": str(second), "status": "delivered"},  # a repeat: unchanged
            {"id": pmid(), "status": "delivered"},  # not known yet: parked
        ]).encode())
        unreadable = await stored(session, b"not json")
        done = await stored(session, json.dumps({"id": pmid(), "status": "sent"}).encode())
        await process_webhook(session, PROVIDERS, done)
        elsewhere = await stored(session, json.dumps({"id": pmid(), "status": "sent"}).encode())
        await session.execute(text("UPDATE provider_webhooks SET provider = 'gone' WHERE id = :w"), {"w": elsewhere})
        missing = uuid7()

        outcomes = await service.process_webhooks(session, PROVIDERS, [sent, delivered, unreadable, done, elsewhere, missing])
        assert outcomes == {
            sent: "reports: 2 (2 moved, 0 unchanged, 0 parked)",
            delivered: "reports: 3 (1 moved, 1 unchanged, 1 parked)",
            unreadable: outcomes[unreadable],
            done: None,
            elsewhere: "not processed: provider gone is not configured",
            missing: None,
        }
        assert outcomes[unreadable].startswith("invalid: ")
        statuses = await session.execute(
            text("SELECT id, status, provider_message_id FROM messages WHERE id IN (:a, :b)"), {"a": first, "b": second}
        )
        assert {r.id: (r.status, r.provider_message_id) for r in statuses} == {
            first: ("delivered", p1), second: ("delivered", p2),
        }
        history = await session.execute(
            text("SELECT status FROM message_status_history WHERE message_id = :m ORDER BY id"), {"m": first}
        )
        assert [r.status for r in history][-2:] == ["sent", "delivered"]
        rows = await session.execute(
            text("SELECT id, outcome, processed_at IS NOT NULL AS processed FROM provider_webhooks WHERE id = ANY(:w)"),
            {"w": [sent, delivered, unreadable, elsewhere]},
        )
        assert {r.id: (r.outcome, r.processed) for r in rows} == {
            sent: (outcomes[sent], True),
            delivered: (outcomes[delivered], True),
            unreadable: (outcomes[unreadable], True),
            elsewhere: (outcomes[elsewhere], False),  # kept to be replayed
        }
        # Processed now: a redelivered run does nothing.
        assert set((await service.process_webhooks(session, PROVIDERS, [sent, delivered])).values()) == {None}


@pytest.mark.parametrize("body", [b"not json", b'{"id": "x", "status": "read"}', b"[]"])
async def test_an_unreadable_signed_webhook_is_kept_with_its_reason(body):
    async with rollback_session(SETTINGS) as session:
        webhook = await stored(session, body)
        outcome = await process_webhook(session, PROVIDERS, webhook)
        assert outcome.startswith("invalid: ")
        row = (await session.execute(text("SELECT body, outcome, processed_at FROM provider_webhooks WHERE id = :w"),
                                     {"w": webhook})).one()
        assert (bytes(row.body), row.outcome) == (body, outcome) and row.processed_at is not None


async def test_a_forged_webhook_stores_nothing():
    async with rollback_session(SETTINGS) as session:
        body = b'{"id": "x", "status": "sent"}'
        url = "http://127.0.0.1:8080/api/v1/webhooks/sms/simulator"
        with pytest.raises(service.InvalidSignature):
            await service.store_webhook(session, SIM, url, {"x-signature": webhook_signature("guess", url, body)}, body)
        count = await session.execute(text("SELECT count(*) FROM provider_webhooks WHERE body = :b"), {"b": body})
        assert count.scalar() == 0


async def test_only_routed_providers_that_call_back_take_webhooks():
    assert set(service.webhook_providers(MessagingSettings(sms_routes={"*": ["simulator", "sns"]}))) == {"simulator"}
    assert service.webhook_providers(MessagingSettings(sms_routes={"*": ["sns"]})) == {}
