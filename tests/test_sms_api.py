"""Sending SMS and reading them back through the gateway (issue 5; seeds 000, 002, 003): the send
and its refusals (nothing stored), segments, Idempotency-Key, opt-outs, message lists, details
with their status history, SMS logs by date, seed 003's send-sms and get-conversation, tenant
numbers, and tenant isolation.

Sends here are processed for real: billing answers (these tenants have no credit, so their
messages end `rejected`) and the worker dispatches funded ones. Assertions hold whatever the
saga has done meanwhile: the history starts with `queued`, statuses are in the known set."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt

from tests.support import SIMULATOR, new_tenant, random_phone, superuser

STATUSES = {"queued", "sent", "delivered", "failed", "rejected"}
DEFAULT_SENDER = "+18005550100"


def error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] == code, body
    return body


async def send(gateway, who, status: int = 202, **body) -> dict:  # noqa: ANN001
    r = await gateway.post("/api/v1/sms/send", json=body, headers=who)
    assert r.status_code == status, r.text
    return r.json()["data"]


async def logs(gateway, who, **params) -> dict:  # noqa: ANN001
    r = await gateway.get("/api/v1/sms/logs", params=params, headers=who)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_a_send_is_queued_with_ids_and_segments(gateway):
    who = await new_tenant(gateway)
    phones = [random_phone() for _ in range(3)]
    data = await send(gateway, who, message="a" * 160, recipients=phones)
    assert set(data) == {"batchId", "sender", "encoding", "segments", "messages", "skipped", "count"}
    assert (data["encoding"], data["segments"], data["count"], data["skipped"]) == ("GSM-7", 1, 3, [])
    assert data["sender"] == DEFAULT_SENDER
    assert [m["to"] for m in data["messages"]] == phones
    assert all(m["status"] == "queued" and m["contactId"] is None for m in data["messages"])

    assert (await send(gateway, who, message="a" * 161, recipients=[phones[0]]))["segments"] == 2
    emoji = await send(gateway, who, message="Hello 😀", recipients=[phones[0]])
    assert (emoji["encoding"], emoji["segments"]) == ("UCS-2", 1)
    assert (await send(gateway, who, message="😀" * 36, recipients=[phones[0]]))["segments"] == 2

    # Every message is listed, newest first, and its history starts with `queued`.
    listed = await logs(gateway, who)
    assert listed["total"] == 6
    first = data["messages"][0]["id"]
    r = await gateway.get(f"/api/v1/messages/{first}", headers=who)
    assert r.status_code == 200, r.text
    detail = r.json()["data"]
    assert detail["history"][0]["status"] == "queued" and detail["status"] in STATUSES
    assert (detail["direction"], detail["from"], detail["to"], detail["body"]) == (
        "outbound", DEFAULT_SENDER, phones[0], "a" * 160)
    assert (detail["segments"], detail["encoding"], detail["batchId"]) == (1, "GSM-7", data["batchId"])
    assert {"priceMinor", "currency", "provider", "error", "conversationId"} <= set(detail)


async def test_refused_sends_answer_422_and_store_nothing(gateway):
    who, other = await new_tenant(gateway), await new_tenant(gateway)
    r = await gateway.post("/api/v1/contacts", json={"name": "Theirs", "phone": random_phone()}, headers=other)
    assert r.status_code == 201, r.text
    foreign_contact = r.json()["data"]["id"]
    phone = random_phone()
    cases = [
        ({"message": "hi", "recipients": ["+1415"]}, "INVALID_RECIPIENTS"),
        ({"message": "", "recipients": [phone]}, "EMPTY_MESSAGE"),
        ({"message": "a" * 1601, "recipients": [phone]}, "MESSAGE_TOO_LONG"),
        ({"message": "hi", "recipients": [phone] * 10_001}, "TOO_MANY_RECIPIENTS"),
        ({"message": "hi", "recipients": []}, "NO_RECIPIENTS"),
        ({"message": "hi", "recipients": [str(uuid.uuid4())]}, "UNKNOWN_CONTACTS"),
        ({"message": "hi", "recipients": [phone, foreign_contact]}, "UNKNOWN_CONTACTS"),
        ({"message": "hi", "recipients": [phone], "sender": random_phone()}, "SENDER_NOT_OWNED"),
        ({"message": "hi", "recipients": [phone], "tenantId": str(uuid.uuid4())}, "VALIDATION_ERROR"),
    ]
    for body, code in cases:
        answer = error(await gateway.post("/api/v1/sms/send", json=body, headers=who), 422, code)
        if code == "UNKNOWN_CONTACTS" and foreign_contact in body["recipients"]:
            assert answer["details"]["listed"] == [foreign_contact]
    assert (await logs(gateway, who))["total"] == 0
    r = await gateway.post("/api/v1/sms/send", json={"message": "hi", "recipients": [phone]})
    error(r, 401, "UNAUTHORIZED")


async def test_recipients_are_contacts_or_numbers_each_sent_once_and_opted_out_ones_skipped(gateway):
    who = await new_tenant(gateway)
    ann, out = random_phone(), random_phone()
    r = await gateway.post("/api/v1/contacts", json={"name": "Ann", "phone": ann}, headers=who)
    ann_id = r.json()["data"]["id"]
    # An opt-out row as an inbound STOP leaves it (the tenant's id is in the token).
    tid = jwt.decode(who["Authorization"].split()[1], options={"verify_signature": False})["tid"]
    async with superuser() as conn:
        await conn.execute(
            "INSERT INTO messaging.opt_outs (tenant_id, phone, keyword) VALUES ($1, $2, 'STOP')", uuid.UUID(tid), out
        )
    data = await send(gateway, who, message="hi", recipients=[ann_id, out, ann, ann_id])
    assert [(m["to"], m["contactId"]) for m in data["messages"]] == [(ann, ann_id)]
    assert [(s["to"], s["reason"]) for s in data["skipped"]] == [(out, "opted_out"), (ann, "duplicate"), (ann, "duplicate")]
    nobody = await send(gateway, who, message="hi", recipients=[out])
    assert (nobody["count"], nobody["messages"]) == (0, [])
    r = await gateway.post("/api/messages", json={"to": out, "type": "text", "content": {"text": "hi"}}, headers=who)
    error(r, 422, "RECIPIENT_OPTED_OUT")


async def test_an_idempotency_key_replays_the_first_answer(gateway):
    who = await new_tenant(gateway)
    key = {"Idempotency-Key": f"send-{uuid.uuid4().hex}"}
    body = {"message": "once", "recipients": [random_phone(), random_phone()]}
    first = await gateway.post("/api/v1/sms/send", json=body, headers={**who, **key})
    again = await gateway.post("/api/v1/sms/send", json=body, headers={**who, **key})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert (await logs(gateway, who))["total"] == 2
    r = await gateway.post("/api/v1/sms/send", json={**body, "message": "other"}, headers={**who, **key})
    error(r, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_lists_filter_by_conversation_direction_status_and_dates(gateway):
    who = await new_tenant(gateway)
    a, b = random_phone(), random_phone()
    sent = await send(gateway, who, message="hi", recipients=[a, b])
    one = await gateway.post("/api/messages", json={"to": a, "type": "text", "content": {"text": "again"}}, headers=who)
    assert one.status_code == 202, one.text
    queued = one.json()["data"]
    assert (queued["to"], queued["from"], queued["status"], queued["content"]) == (a, DEFAULT_SENDER, "queued", {"text": "again"})

    r = await gateway.get("/api/v1/messages", params={"limit": 2}, headers=who)
    page = r.json()["data"]
    assert (page["total"], page["totalPages"], len(page["items"])) == (3, 2, 2)
    assert page["items"][0]["id"] == queued["id"]  # newest first
    detail = (await gateway.get(f"/api/messages/{queued['id']}", headers=who)).json()["data"]
    conversation = detail["conversationId"]
    r = await gateway.get("/api/v1/messages", params={"conversationId": conversation}, headers=who)
    assert [m["body"] for m in r.json()["data"]["items"]] == ["again", "hi"]
    r = await gateway.get("/api/v1/messages", params={"direction": "OUTBOUND"}, headers=who)
    assert r.json()["data"]["total"] == 3
    r = await gateway.get("/api/v1/messages", params={"direction": "inbound"}, headers=who)
    assert r.json()["data"]["total"] == 0
    statuses = ",".join(s.upper() for s in STATUSES)
    assert (await gateway.get("/api/v1/messages", params={"status": statuses}, headers=who)).json()["data"]["total"] == 3
    error(await gateway.get("/api/v1/messages", params={"status": "READ"}, headers=who), 422, "INVALID_STATUS")
    error(await gateway.get("/api/v1/messages", params={"direction": "up"}, headers=who), 422, "INVALID_DIRECTION")

    today = datetime.now(UTC).date()
    assert (await logs(gateway, who, **{"from": str(today), "to": str(today)}))["total"] == 3
    assert (await logs(gateway, who, **{"to": str(today - timedelta(days=1))}))["total"] == 0
    created = datetime.fromisoformat(detail["createdAt"])
    assert (await logs(gateway, who, **{"from": detail["createdAt"]}))["total"] == 1
    assert (await logs(gateway, who, **{"to": (created - timedelta(microseconds=1)).isoformat()}))["total"] == 2
    for params, code in [({"from": "yesterday"}, "INVALID_DATE"), ({"to": "2024-13-01"}, "INVALID_DATE"),
                         ({"from": str(today), "to": str(today - timedelta(days=1))}, "INVALID_RANGE")]:
        error(await gateway.get("/api/v1/sms/logs", params=params, headers=who), 422, code)
    assert sent["count"] == 2

    r = await gateway.post("/api/messages", json={"to": a, "type": "image", "content": {"mediaUrl": "https://x/y.png"}}, headers=who)
    error(r, 422, "UNSUPPORTED_TYPE")


async def test_another_tenants_messages_are_not_found(gateway):
    who, other = await new_tenant(gateway), await new_tenant(gateway)
    data = await send(gateway, who, message="private", recipients=[random_phone()])
    message_id = data["messages"][0]["id"]
    error(await gateway.get(f"/api/v1/messages/{message_id}", headers=other), 404, "MESSAGE_NOT_FOUND")
    error(await gateway.get(f"/api/v1/messages/{uuid.uuid4()}", headers=who), 404, "MESSAGE_NOT_FOUND")
    assert (await logs(gateway, other))["total"] == 0


async def test_seed_003_send_sms_and_get_conversation(gateway):
    who = await new_tenant(gateway)
    peer = random_phone()
    ref = f"seed-{uuid.uuid4().hex}"
    body = {"senderPhone": DEFAULT_SENDER, "receiverPhone": peer, "messageText": "Hello",
            "timestamp": int(time.time()), "uuid": ref}
    first = await gateway.post("/api/send-sms", json=body, headers=who)
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["message"] == "SMS sent successfully" and data["uuid"] == ref and data["duplicate"] is False
    again = (await gateway.post("/api/send-sms", json=body, headers=who)).json()["data"]
    assert again["id"] == data["id"] and again["duplicate"] is True
    error(await gateway.post("/api/send-sms", json={**body, "messageText": "Other"}, headers=who), 422, "UUID_REUSED")
    later = await gateway.post("/api/send-sms", json={**body, "uuid": None, "messageText": "Second"}, headers=who)
    assert later.status_code == 200, later.text
    fresh = {**body, "uuid": f"seed-{uuid.uuid4().hex}"}
    error(await gateway.post("/api/send-sms", json={**fresh, "senderPhone": random_phone()}, headers=who), 422, "SENDER_NOT_OWNED")
    error(await gateway.post("/api/send-sms", json={**fresh, "receiverPhone": "12"}, headers=who), 422, "INVALID_RECIPIENTS")

    r = await gateway.get(f"/api/get-conversation/{peer}", headers=who)
    assert r.status_code == 200, r.text
    conversation = r.json()["data"]
    messages = conversation["messages"]
    assert [m["message_text"] for m in messages] == ["Hello", "Second"]  # oldest first
    for m in messages:
        assert {"phone_number", "message_text", "timestamp", "direction"} <= set(m)
        assert (m["phone_number"], m["direction"]) == (DEFAULT_SENDER, "sent")
        assert abs(m["timestamp"] - time.time()) < 120
    assert conversation["pagination"]["total"] == 2
    r = await gateway.get(f"/api/get-conversation/{peer}", params={"limit": 1, "page": 2}, headers=who)
    assert [m["message_text"] for m in r.json()["data"]["messages"]] == ["Second"]
    error(await gateway.get("/api/get-conversation/12345", headers=who), 422, "INVALID_PHONE")
    r = await gateway.get(f"/api/get-conversation/{peer}", headers=await new_tenant(gateway))
    assert r.json()["data"]["messages"] == []


async def code_sent_to(number: str, count: int = 1, timeout: float = 30) -> str:
    """The newest verification code in `number`'s inbox at the simulator, once it holds `count`."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=SIMULATOR, timeout=10) as sim:
        while True:
            inbox = [m["text"] for m in (await sim.get(f"/_sim/inbox/{number}")).json() if "verify this number" in m["text"]]
            if len(inbox) >= count:
                return re.search(r"\b\d{6}\b", inbox[-1]).group()
            assert time.monotonic() < deadline, f"no code reached {number}: {inbox}"
            await asyncio.sleep(0.2)


async def test_a_number_is_yours_once_the_code_sent_to_it_comes_back_then_it_sends(gateway):
    who, other = await new_tenant(gateway), await new_tenant(gateway)
    number = random_phone()
    r = await gateway.post("/api/v1/sms/numbers", json={"number": number, "label": "Support"}, headers=who)
    assert r.status_code == 202, r.text
    pending = r.json()["data"]
    assert (pending["number"], pending["label"], pending["status"]) == (number, "Support", "pending")
    assert pending["expiresAt"] and set(pending) == {"number", "label", "createdAt", "status", "expiresAt"}
    # Pending: no sending from it yet; asking for another code at once is rationed.
    error(await gateway.post("/api/v1/sms/send", json={"message": "x", "recipients": [random_phone()], "sender": number},
                             headers=who), 422, "SENDER_NOT_OWNED")
    r = await gateway.post("/api/v1/sms/numbers", json={"number": number}, headers=who)
    assert error(r, 429, "CODE_RECENTLY_SENT")["details"]["retryIn"] >= 1 and r.headers["retry-after"]
    listed = (await gateway.get("/api/v1/sms/numbers", headers=who)).json()["data"]
    assert [(n["number"], n["status"]) for n in listed["items"]] == [(number, "pending")]

    code = await code_sent_to(number)  # the real SMS, sent by the dispatcher to the phone
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = await gateway.post(f"/api/v1/sms/numbers/{number}/verify", json={"code": wrong}, headers=who)
    assert error(r, 422, "CODE_INVALID")["details"]["attemptsLeft"] == 4
    error(await gateway.post(f"/api/v1/sms/numbers/{number}/verify", json={"code": "12ab"}, headers=who),
          422, "VALIDATION_ERROR")
    error(await gateway.post(f"/api/v1/sms/numbers/{number}/verify", json={"code": code}, headers=other),
          404, "NUMBER_NOT_CLAIMED")
    r = await gateway.post(f"/api/v1/sms/numbers/{number}/verify", json={"code": code}, headers=who)
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["status"], r.json()["data"]["label"]) == ("verified", "Support")
    # The code SMS is the platform's: it is not in the tenant's logs.
    assert (await gateway.get("/api/v1/sms/logs", headers=who)).json()["data"]["total"] == 0

    error(await gateway.post("/api/v1/sms/numbers", json={"number": number}, headers=other), 409, "NUMBER_TAKEN")
    error(await gateway.post("/api/v1/sms/numbers", json={"number": number}, headers=who), 409, "NUMBER_TAKEN")
    error(await gateway.post("/api/v1/sms/numbers", json={"number": DEFAULT_SENDER}, headers=who), 409, "NUMBER_TAKEN")
    error(await gateway.post("/api/v1/sms/numbers", json={"number": "555"}, headers=who), 422, "INVALID_PHONE")
    listed = (await gateway.get("/api/v1/sms/numbers", headers=who)).json()["data"]
    assert [(n["number"], n["status"]) for n in listed["items"]] == [(number, "verified")]
    assert (await gateway.get("/api/v1/sms/numbers", headers=other)).json()["data"]["items"] == []

    data = await send(gateway, who, message="from my number", recipients=[random_phone()], sender=number)
    assert data["sender"] == number
    error(await gateway.post("/api/v1/sms/send", json={"message": "x", "recipients": [random_phone()], "sender": number},
                             headers=other), 422, "SENDER_NOT_OWNED")

    error(await gateway.delete(f"/api/v1/sms/numbers/{number}", headers=other), 404, "NUMBER_NOT_FOUND")
    r = await gateway.delete(f"/api/v1/sms/numbers/{number}", headers=who)
    assert r.status_code == 200 and r.json()["data"] == {"number": number, "deleted": True}
    assert (await gateway.post("/api/v1/sms/numbers", json={"number": number}, headers=other)).status_code == 202
