"""SMS provider webhooks and inbound SMS through the gateway, against the running stack and its
simulator: signatures over the public URL (nothing stored when forged), raw rows processed by
the messaging worker, duplicate reports changing nothing, reports that arrive before their
message's provider id parked and applied later, replies from a handset landing in their
conversation (STOP/START opting out and in), unroutable numbers kept, and seed 003's
`/api/receive-sms`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
from common.db import create_engine, create_session_factory
from common.ids import uuid7
from messaging.providers.base import webhook_signature
from messaging.settings import MessagingSettings
from messaging.sms import status as st

from tests.support import SIMULATOR, new_tenant, random_phone, superuser

SECRET = "sim_local_whsec"  # scripts/devstack.py
PATH = "/api/v1/webhooks/sms/simulator"
PUBLIC_URL = f"http://127.0.0.1:8080{PATH}"


def signed(payload, *, url: str = PUBLIC_URL, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:  # noqa: ANN001
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, {"Content-Type": "application/json", "X-Signature": webhook_signature(secret, url, body)}


async def post_signed(gateway, payload, *, path: str = PATH, **sign) -> httpx.Response:  # noqa: ANN001
    body, headers = signed(payload, **sign)
    return await gateway.post(path, content=body, headers=headers)


async def fetch(sql: str, *args):  # noqa: ANN201
    async with superuser() as conn:
        return await conn.fetch(sql, *args)


async def until(probe, timeout: float = 30.0):  # noqa: ANN001, ANN201
    """Poll `probe()` until it answers something truthy (the bound covers a worker restarting:
    the other work on this stack restarts it, and a consumer group takes a few seconds to rejoin)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found or time.monotonic() > deadline:
            assert found, f"nothing within {timeout}s"
            return found
        await asyncio.sleep(0.1)


async def processed(webhook_id: str) -> str:
    async def probe():  # noqa: ANN202
        rows = await fetch(
            "SELECT outcome FROM messaging.provider_webhooks WHERE id = $1 AND processed_at IS NOT NULL",
            uuid.UUID(webhook_id),
        )
        return rows[0]["outcome"] if rows else None

    return await until(probe)


async def stored_with(body: bytes) -> int:
    [row] = await fetch("SELECT count(*) AS n FROM messaging.provider_webhooks WHERE body = $1", body)
    return row["n"]


async def outbound_message(*, provider: str | None = None, pmid: str | None = None) -> uuid.UUID:
    """An outbound message as the send path leaves it (queued, billing reserved)."""
    tenant, conv, msg = uuid.uuid4(), uuid7(), uuid7()
    async with superuser() as conn:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO messaging.conversations (id, tenant_id, our_number, peer_number) VALUES ($1, $2, $3, $4)",
                conv, tenant, "+18005550100", random_phone(),
            )
            await conn.execute(
                "INSERT INTO messaging.messages (id, tenant_id, conversation_id, direction, from_number, to_number,"
                " body, encoding, segments, status, billing, provider, provider_message_id)"
                " VALUES ($1, $2, $3, 'outbound', '+18005550100', '+14155550123', 'hi', 'GSM-7', 1, 'queued',"
                " 'reserved', $4, $5)",
                msg, tenant, conv, provider, pmid,
            )
            await conn.execute(
                "INSERT INTO messaging.message_status_history (message_id, status) VALUES ($1, 'queued')", msg
            )
    return msg


async def history(msg: uuid.UUID) -> list[str]:
    rows = await fetch("SELECT status FROM messaging.message_status_history WHERE message_id = $1 ORDER BY id", msg)
    return [r["status"] for r in rows]


async def status_of(msg: uuid.UUID) -> str:
    [row] = await fetch("SELECT status FROM messaging.messages WHERE id = $1", msg)
    return row["status"]


def pmid() -> str:
    return f"sim_{uuid.uuid4().hex[:16]}"


# -- signatures ------------------------------------------------------------------------------------


async def test_a_forged_or_missing_signature_is_refused_and_nothing_is_stored(gateway):
    body, headers = signed({"id": pmid(), "status": "delivered"}, secret="guessed")
    r = await gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 401, r.text
    assert (r.json()["success"], r.json()["code"]) == (False, "INVALID_SIGNATURE")
    r = await gateway.post(PATH, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert await stored_with(body) == 0


async def test_a_signature_over_another_url_is_refused(gateway):
    # What the service sees behind nginx is not what the provider signed.
    for url in ("http://127.0.0.1:8102/api/v1/webhooks/sms/simulator", f"{PUBLIC_URL}?x=1", PUBLIC_URL + "/"):
        body = json.dumps({"id": pmid(), "status": "sent"}).encode()
        r = await post_signed(gateway, body, url=url)
        assert r.status_code == 401, url
        assert await stored_with(body) == 0
    # The query string is part of what is signed.
    r = await post_signed(gateway, {"id": pmid(), "status": "sent"}, path=f"{PATH}?account=7", url=f"{PUBLIC_URL}?account=7")
    assert r.status_code == 200, r.text


async def test_unknown_providers_and_oversized_bodies_are_refused(gateway):
    for name in ("nope", "sns"):  # sns never calls back
        r = await post_signed(gateway, {"id": "x", "status": "sent"}, path=f"/api/v1/webhooks/sms/{name}",
                              url=f"http://127.0.0.1:8080/api/v1/webhooks/sms/{name}")
        assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_PROVIDER")
    big = b"[" + b" " * (1024 * 1024) + b"]"
    r = await post_signed(gateway, big)
    assert (r.status_code, r.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_a_signed_but_unreadable_body_is_answered_200_and_kept_with_its_reason(gateway):
    # A provider retries anything but 2xx, and a retry would carry the same bytes.
    r = await post_signed(gateway, b'{"id": "x", "status": "read"}')
    assert r.status_code == 200, r.text
    outcome = await processed(r.json()["data"]["webhookId"])
    assert outcome.startswith("invalid: ") and "unknown status" in outcome


# -- delivery reports --------------------------------------------------------------------------------


async def test_a_report_delivered_three_times_changes_the_history_once(gateway):
    msg, p = await outbound_message(), pmid()
    report = {"id": p, "clientRef": str(msg), "status": "delivered"}
    ids = []
    for _ in range(3):
        r = await post_signed(gateway, report)
        assert r.status_code == 200, r.text
        ids.append(r.json()["data"]["webhookId"])
    outcomes = [await processed(i) for i in ids]
    assert sorted(outcomes) == ["reports: 1 (0 moved, 1 unchanged, 0 parked)"] * 2 + [
        "reports: 1 (1 moved, 0 unchanged, 0 parked)"
    ]
    assert await history(msg) == ["queued", "delivered"]
    [row] = await fetch("SELECT provider, provider_message_id, updated_at FROM messaging.messages WHERE id = $1", msg)
    assert tuple(row)[:2] == ("simulator", p)
    # Once more, and a late `sent`: not even the row is written again.
    for late in (report, {**report, "status": "sent"}):
        r = await post_signed(gateway, late)
        assert await processed(r.json()["data"]["webhookId"]) == "reports: 1 (0 moved, 1 unchanged, 0 parked)"
    [again] = await fetch("SELECT updated_at FROM messaging.messages WHERE id = $1", msg)
    assert again["updated_at"] == row["updated_at"]
    assert await history(msg) == ["queued", "delivered"]


async def test_a_report_before_the_provider_id_is_parked_then_applied_when_the_dispatcher_records_it(gateway):
    msg, p = await outbound_message(), pmid()
    r = await post_signed(gateway, [{"id": p, "status": "sent"}, {"id": p, "status": "delivered"}])
    assert r.status_code == 200
    assert await processed(r.json()["data"]["webhookId"]) == "reports: 2 (0 moved, 0 unchanged, 2 parked)"
    assert await status_of(msg) == "queued"
    parked = await fetch("SELECT status FROM messaging.pending_delivery_reports WHERE provider_message_id = $1 ORDER BY id", p)
    assert [r["status"] for r in parked] == ["sent", "delivered"]

    # What the dispatcher does once the provider answered the send.
    engine = create_engine(MessagingSettings())
    try:
        async with create_session_factory(engine, MessagingSettings()).begin() as session:
            await st.apply(session, [st.Change(msg, st.SENT, provider="simulator", provider_message_id=p)])
            await st.resolve_pending(session, [(msg, "simulator", p)])
    finally:
        await engine.dispose()
    assert await status_of(msg) == "delivered"
    assert await history(msg) == ["queued", "sent", "delivered"]
    assert await fetch("SELECT 1 FROM messaging.pending_delivery_reports WHERE provider_message_id = $1", p) == []


# -- inbound SMS ----------------------------------------------------------------------------------


async def own_number(tenant: uuid.UUID) -> str:
    number = random_phone()
    async with superuser() as conn:
        await conn.execute("INSERT INTO messaging.sms_numbers (number, tenant_id) VALUES ($1, $2)", number, tenant)
    return number


async def text_from_handset(sender: str, to: str, text: str, **extra) -> str:
    async with httpx.AsyncClient(base_url=SIMULATOR, timeout=5) as client:
        r = await client.post("/_sim/inbound", json={"from": sender, "to": to, "text": text, **extra})
        assert r.status_code == 202, r.text
        return r.json()["id"]


async def inbound_message(provider_message_id: str):  # noqa: ANN201
    async def probe():  # noqa: ANN202
        return await fetch(
            "SELECT m.*, c.our_number, c.peer_number, c.tenant_id AS conversation_tenant FROM messaging.messages m"
            " JOIN messaging.conversations c ON c.id = m.conversation_id"
            " WHERE m.provider = 'simulator' AND m.provider_message_id = $1",
            provider_message_id,
        )

    [row] = await until(probe)
    return row


async def webhooks_carrying(item_id: str, count: int) -> list[str]:
    """The outcomes of the processed webhooks whose body mentions `item_id`, once there are `count`."""

    async def probe():  # noqa: ANN202
        rows = await fetch(
            "SELECT outcome FROM messaging.provider_webhooks WHERE processed_at IS NOT NULL"
            " AND received_at > now() - interval '1 minute' AND position(convert_to($1, 'UTF8') in body) > 0",
            item_id,
        )
        return [r["outcome"] for r in rows] if len(rows) >= count else None

    return await until(probe)


async def opted_out(tenant: uuid.UUID, phone: str) -> bool:
    return bool(await fetch("SELECT 1 FROM messaging.opt_outs WHERE tenant_id = $1 AND phone = $2", tenant, phone))


async def test_a_reply_from_a_handset_lands_in_its_conversation_once():
    tenant, peer = uuid.uuid4(), random_phone()
    ours = await own_number(tenant)
    sms_id = await text_from_handset(peer, ours, "Hi, is this the pharmacy? 💊")
    row = await inbound_message(sms_id)
    assert (row["tenant_id"], row["conversation_tenant"], row["direction"], row["status"], row["billing"]) == (
        tenant, tenant, "inbound", "received", "none"
    )
    assert (row["our_number"], row["peer_number"], row["from_number"], row["to_number"]) == (ours, peer, peer, ours)
    assert (row["body"], row["encoding"]) == ("Hi, is this the pharmacy? 💊", "UCS-2")
    assert await history(row["id"]) == ["received"]
    # The provider delivering the same message again (same id) stores nothing new.
    await text_from_handset(peer, ours, "Hi, is this the pharmacy? 💊", id=sms_id)
    outcomes = await webhooks_carrying(sms_id, 2)
    assert sorted(outcomes) == [f"duplicate {row['id']}", f"received {row['id']}"]
    assert len(await fetch("SELECT 1 FROM messaging.messages WHERE provider_message_id = $1", sms_id)) == 1
    # A second message from the same handset joins the same conversation.
    again = await inbound_message(await text_from_handset(peer, ours, "hello?"))
    assert again["conversation_id"] == row["conversation_id"]


async def test_stop_opts_the_sender_out_and_start_opts_them_back_in():
    tenant, peer = uuid.uuid4(), random_phone()
    ours = await own_number(tenant)
    await inbound_message(await text_from_handset(peer, ours, "STOP"))
    assert await opted_out(tenant, peer)
    await inbound_message(await text_from_handset(peer, ours, "Start"))
    assert not await opted_out(tenant, peer)


async def test_a_message_to_a_number_nobody_owns_is_unroutable_and_kept():
    nobody = random_phone()
    sms_id = await text_from_handset(random_phone(), nobody, "anyone there?")
    assert await webhooks_carrying(sms_id, 1) == [f"unroutable: no tenant owns {nobody}"]
    [row] = await fetch(
        "SELECT body FROM messaging.provider_webhooks WHERE position(convert_to($1, 'UTF8') in body) > 0", sms_id
    )
    assert json.loads(row["body"])[0]["text"] == "anyone there?"  # the raw request is kept (a batch: a list)
    assert await fetch("SELECT 1 FROM messaging.messages WHERE provider_message_id = $1", sms_id) == []


# -- seed 003: POST /api/receive-sms ---------------------------------------------------------------


async def test_receive_sms_stores_a_message_once_per_uuid(gateway):
    headers = await new_tenant(gateway)
    sender, receiver, ref = random_phone(), random_phone(), f"seed-{uuid.uuid4()}"
    payload = {"senderPhone": sender, "receiverPhone": receiver, "messageText": "Hello there",
               "timestamp": 1_645_845_235, "uuid": ref}
    first = await gateway.post("/api/receive-sms", json=payload, headers=headers)
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["message"] == "SMS received successfully"
    again = await gateway.post("/api/receive-sms", json=payload, headers=headers)
    assert again.json() == first.json()
    other = await gateway.post("/api/receive-sms", json={**payload, "messageText": "Another"}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (422, "UUID_REUSED")
    rows = await fetch(
        "SELECT m.direction, m.status, m.from_number, m.to_number, m.body, extract(epoch FROM m.sent_at)::bigint AS sent,"
        " c.our_number, c.peer_number FROM messaging.messages m JOIN messaging.conversations c ON c.id = m.conversation_id"
        " WHERE m.external_id = $1",
        ref,
    )
    assert [tuple(r) for r in rows] == [("inbound", "received", sender, receiver, "Hello there", 1_645_845_235, receiver, sender)]
    assert await history(uuid.UUID(data["id"])) == ["received"]
    # Without a uuid every call is a new message; STOP through the API opts the sender out too.
    r = await gateway.post("/api/receive-sms", json={"senderPhone": sender, "receiverPhone": receiver,
                                                     "messageText": "stop"}, headers=headers)
    assert r.status_code == 200 and r.json()["data"]["id"] != data["id"]
    [tenant] = await fetch("SELECT tenant_id FROM messaging.messages WHERE id = $1", uuid.UUID(data["id"]))
    assert await opted_out(tenant["tenant_id"], sender)


async def test_receive_sms_refuses_bad_input(gateway):
    headers = await new_tenant(gateway)
    good = {"senderPhone": random_phone(), "receiverPhone": random_phone(), "messageText": "hi"}
    for change, code in (
        ({"senderPhone": "12345"}, "INVALID_PHONE"),
        ({"receiverPhone": "not a phone"}, "INVALID_PHONE"),
        ({"messageText": ""}, "VALIDATION_ERROR"),
        ({"messageText": "   "}, "VALIDATION_ERROR"),
        ({"messageText": "a" * 1601}, "MESSAGE_TOO_LONG"),
        ({"timestamp": -1}, "VALIDATION_ERROR"),
        ({"tenantId": str(uuid.uuid4())}, "VALIDATION_ERROR"),
    ):
        r = await gateway.post("/api/receive-sms", json={**good, **change}, headers=headers)
        assert (r.status_code, r.json()["code"]) == (422, code), (change, r.text)
    r = await gateway.post("/api/receive-sms", json=good)
    assert r.status_code == 401
