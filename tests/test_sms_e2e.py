"""Issue 5's journey through the gateway, as a customer meets it: register, top up by card
(localstripe), import 100 contacts, send them a two-segment SMS, see every message delivered by
the simulator (its handsets' inboxes hold the text), the logs show each message's statuses and
price, and the balance went down by exactly segments x price. A tenant without credit: the send
is accepted, every message ends `rejected`, and no provider ever saw it."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.support import SIMULATOR, credits, funded_tenant, new_tenant, random_phone

LONG_TEXT = ("Your Switchboard order has shipped. " * 6)[:200]  # GSM-7, 200 chars: 2 segments (153 + 47)


async def import_contacts(gateway: httpx.AsyncClient, who: dict, phones: list[str]) -> list[str]:
    rows = "name,phone,tags\n" + "".join(f"Customer {i},{p},e2e\n" for i, p in enumerate(phones))
    r = await gateway.post(
        "/api/v1/contacts/import/csv", files={"file": ("c.csv", rows.encode(), "text/csv")}, headers=who
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["created"] == len(phones), r.json()
    ids: list[str] = []
    page = 1
    while True:
        r = await gateway.get("/api/v1/contacts", params={"tag": "e2e", "limit": 100, "page": page}, headers=who)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        ids += [c["id"] for c in data["items"]]
        if page >= data["totalPages"]:
            return ids
        page += 1


async def messages_of(gateway: httpx.AsyncClient, who: dict, **params) -> list[dict]:
    out: list[dict] = []
    page = 1
    while True:
        r = await gateway.get("/api/v1/messages", params={**params, "limit": 100, "page": page}, headers=who)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        out += data["items"]
        if page >= data["totalPages"]:
            return out
        page += 1


async def wait_statuses(gateway, who, batch: str, final: set[str], n: int, timeout: float) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in await messages_of(gateway, who) if m["batchId"] == batch]
        if len(found) == n and all(m["status"] in final for m in found):
            return found
        if time.monotonic() > deadline:
            counts: dict[str, int] = {}
            for m in found:
                counts[m["status"]] = counts.get(m["status"], 0) + 1
            raise AssertionError(f"after {timeout} s: {counts} of {n}")
        await asyncio.sleep(0.5)


async def test_a_customer_sends_to_100_contacts_and_pays_exactly_segments_times_price(gateway):
    who = await funded_tenant(gateway, 5_000)
    phones = list({random_phone() for _ in range(100)})
    contact_ids = await import_contacts(gateway, who, phones)
    assert len(contact_ids) == len(phones)
    r = await gateway.get("/api/v1/payments/prices", params={"country": "US"}, headers=who)
    segment_price = r.json()["data"]["segmentPrice"]

    r = await gateway.post("/api/v1/sms/send", json={"message": LONG_TEXT, "recipients": contact_ids}, headers=who)
    assert r.status_code == 202, r.text
    sent = r.json()["data"]
    assert (sent["count"], sent["encoding"], sent["skipped"]) == (len(phones), "GSM-7", [])
    assert {m["status"] for m in sent["messages"]} == {"queued"}

    found = await wait_statuses(gateway, who, sent["batchId"], {"delivered"}, len(phones), timeout=90)
    # Every handset got the text, once, under our message id.
    async with httpx.AsyncClient(base_url=SIMULATOR, timeout=10) as sim:
        for message in found[:20]:
            inbox = (await sim.get(f"/_sim/inbox/{message['to']}")).json()
            mine = [m for m in inbox if m["clientRef"] == message["id"]]
            assert len(mine) == 1 and mine[0]["text"] == LONG_TEXT, inbox
    # The log of one message: its statuses in order and its price.
    r = await gateway.get(f"/api/v1/messages/{found[0]['id']}", headers=who)
    detail = r.json()["data"]
    assert [h["status"] for h in detail["history"]] == ["queued", "sent", "delivered"], detail["history"]
    assert detail["segments"] == 2 and detail["priceMinor"] == 2 * segment_price
    r = await gateway.get("/api/v1/sms/logs", params={"from": detail["createdAt"][:10]}, headers=who)
    assert r.status_code == 200 and r.json()["data"]["total"] >= len(phones)

    # Billing captured every hold: the balance went down by exactly segments x price each.
    expected = 5_000 - len(phones) * 2 * segment_price
    deadline = time.monotonic() + 60
    while (balance := await credits(gateway, who))["balance"] != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert (balance["balance"], balance["held"]) == (expected, 0), balance


async def test_without_credit_every_message_is_rejected_and_no_provider_sees_it(gateway):
    who = await new_tenant(gateway)
    phones = [random_phone() for _ in range(3)]
    r = await gateway.post("/api/v1/sms/send", json={"message": "hello", "recipients": phones}, headers=who)
    assert r.status_code == 202, r.text
    batch = r.json()["data"]["batchId"]
    found = await wait_statuses(gateway, who, batch, {"rejected", "sent", "delivered", "failed"}, 3, timeout=60)
    assert {m["status"] for m in found} == {"rejected"}, found
    assert {m["error"] for m in found} == {"insufficient_credits"}
    r = await gateway.get(f"/api/v1/messages/{found[0]['id']}", headers=who)
    assert [h["status"] for h in r.json()["data"]["history"]] == ["queued", "rejected"]
    await asyncio.sleep(1)
    async with httpx.AsyncClient(base_url=SIMULATOR, timeout=10) as sim:
        for phone in phones:
            assert (await sim.get(f"/_sim/inbox/{phone}")).json() == []
    assert (await credits(gateway, who))["balance"] == 0
