"""Billing's side of the SMS saga through Kafka, with the billing worker as it runs in
production: hold requests arrive as messaging.sms.requested, outcomes as messaging.sms.status.
This test plays messaging's part by publishing those events itself."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.settings import BillingSettings
from common.messaging.kafka import make_producer
from common.settings import BaseServiceSettings

from tests.support import EventTap, devstack, sessions_fixture, superuser

PRICE = 7  # set per test by a pricing rule of its own (most specific wins)


sessions = sessions_fixture(lambda: BillingSettings(db_pool_size=4))


async def fund(sessions, tenant: str, amount: int) -> None:  # noqa: ANN001
    async with sessions() as s, s.begin():
        account = await ledger.account_for(s, tenant, "USD", create=True)
        await ledger.credit(s, account, amount, business_key=f"fund:{tenant}", kind="adjustment",
                            counter_account="adjustments", description="test funding")


async def own_price(route: str) -> None:
    async with superuser() as conn:
        await conn.execute(
            "INSERT INTO billing.pricing_rules (id, kind, country, route, currency, fixed_price_minor) "
            "VALUES (gen_random_uuid(), 'sms', 'IS', $1, 'USD', $2)", route, PRICE)


def envelope(event_type: str, subject: str, tenant: str, data: dict) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/switchboard/messaging", "type": event_type,
        "time": datetime.now(UTC).isoformat(), "subject": subject, "tenantid": tenant, "data": data,
    }).encode()


async def publish(records: list[tuple[str, str, bytes]]) -> None:
    producer = make_producer(BaseServiceSettings(service_name="test-messaging"))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key.encode()) for topic, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def sms_requested(tenant: str, message_id: str, route: str) -> tuple[str, str, bytes]:
    return ("messaging.sms", message_id, envelope("messaging.sms.requested.v1", message_id, tenant, {
        "messageId": message_id, "tenantId": tenant, "to": "+3545551234", "country": "IS",
        "segments": 1, "route": route}))


def sms_status(tenant: str, message_id: str, status: str) -> tuple[str, str, bytes]:
    return ("messaging.sms", message_id, envelope("messaging.sms.status.v1", message_id, tenant, {
        "messageId": message_id, "tenantId": tenant, "status": status}))


async def holds_by_status(tenant: str) -> dict[str, int]:
    async with superuser() as conn:
        rows = await conn.fetch(
            "SELECT h.status, count(*) FROM billing.holds h JOIN billing.accounts a ON a.id = h.account_id "
            "WHERE a.tenant_id = $1 GROUP BY h.status", tenant)
    return {r["status"]: r["count"] for r in rows}


async def wait_for(predicate, timeout: float):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.3)


async def test_200_hold_requests_on_a_balance_for_100_reserve_exactly_100(sessions):
    tenant, route = f"saga-{uuid.uuid4()}", f"r-{uuid.uuid4().hex[:12]}"
    await own_price(route)
    await fund(sessions, tenant, 100 * PRICE)
    ids = [f"m-{uuid.uuid4()}" for _ in range(200)]
    async with EventTap("billing.credits") as tap:
        await publish([sms_requested(tenant, m, route) for m in ids])
        replies: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(replies) < 200 and time.monotonic() < deadline:
            try:
                await tap.find(lambda e: e["data"]["tenantId"] == tenant and e["data"]["reference"] not in replies, 5)
            except AssertionError:
                continue
            for e in tap.seen:
                if e["data"].get("tenantId") == tenant:
                    replies[e["data"]["reference"]] = e["type"]
    kinds = list(replies.values())
    assert len(replies) == 200
    assert kinds.count("billing.credits.reserved.v1") == 100
    assert kinds.count("billing.credits.rejected.v1") == 100
    async with sessions() as s:
        account = await LedgerRepository(s).customer(tenant)
    assert (account.balance_minor, account.held_minor) == (100 * PRICE, 100 * PRICE)


@pytest.mark.slow
async def test_billing_killed_mid_batch_neither_loses_nor_doubles_a_hold_or_a_capture(sessions):
    tenant, route = f"saga-{uuid.uuid4()}", f"r-{uuid.uuid4().hex[:12]}"
    await own_price(route)
    await fund(sessions, tenant, 400 * PRICE)
    ids = [f"m-{uuid.uuid4()}" for _ in range(400)]

    await publish([sms_requested(tenant, m, route) for m in ids])
    await wait_for(lambda: _some(tenant), 30)
    assert "signalled" in devstack("ctl", "signal", "KILL", "billing-worker").stdout  # supervisor restarts it
    held = await wait_for(lambda: _count(tenant, "held", 400), 120)
    assert held, await holds_by_status(tenant)

    outcomes = [sms_status(tenant, m, "delivered" if i % 2 else "failed") for i, m in enumerate(ids)]
    await publish(outcomes)
    await wait_for(lambda: _some_settled(tenant), 30)
    assert "signalled" in devstack("ctl", "signal", "KILL", "billing-worker").stdout
    settled = await wait_for(lambda: _settled(tenant), 120)
    assert settled, await holds_by_status(tenant)

    assert await holds_by_status(tenant) == {"captured": 200, "released": 200}
    async with sessions() as s:
        account = await LedgerRepository(s).customer(tenant)
        checks = await LedgerRepository(s).invariants()
    assert (account.balance_minor, account.held_minor) == (200 * PRICE, 0)
    assert checks == {"ledger_sum": 0, "cache_mismatches": 0, "held_mismatches": 0, "negative_available": 0}


async def _some(tenant: str) -> bool:
    return sum((await holds_by_status(tenant)).values()) > 0


async def _count(tenant: str, status: str, n: int) -> bool:
    return (await holds_by_status(tenant)).get(status, 0) == n


async def _some_settled(tenant: str) -> bool:
    h = await holds_by_status(tenant)
    return h.get("captured", 0) + h.get("released", 0) > 0


async def _settled(tenant: str) -> bool:
    h = await holds_by_status(tenant)
    return h.get("captured", 0) + h.get("released", 0) == 400


async def test_a_tenant_sees_and_spends_only_its_own_money(gateway, sessions):
    async def user() -> dict:
        r = await gateway.post("/api/v1/users/register", json={
            "email": f"t{uuid.uuid4().hex[:10]}@example.com", "password": "long password 1", "name": "T",
            "tenantName": "Co"})
        return r.json()["data"]

    a, b = await user(), await user()
    await asyncio.sleep(0)  # accounts are opened by the worker; funding opens them lazily anyway
    await fund(sessions, a["user"]["tenantId"], 5_000)
    headers_a = {"authorization": f"Bearer {a['accessToken']}"}
    headers_b = {"authorization": f"Bearer {b['accessToken']}"}
    for _ in range(50):
        credits_b = await gateway.get("/api/v1/users/credits", headers=headers_b)
        if credits_b.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert credits_b.json()["data"]["balance"] == 0
    assert (await gateway.get("/api/v1/users/credits", headers=headers_a)).json()["data"]["balance"] == 5_000
    history_a = (await gateway.get("/api/v1/payments/history", headers=headers_a)).json()["data"]
    history_b = (await gateway.get("/api/v1/payments/history", headers=headers_b)).json()["data"]
    assert history_a["total"] == 1 and history_a["items"][0]["amount"] == 5_000
    assert history_b["total"] == 0
    # A hold event naming tenant B can only ever touch B's own (empty) balance.
    route = f"r-{uuid.uuid4().hex[:12]}"
    await own_price(route)
    message = f"m-{uuid.uuid4()}"
    async with EventTap("billing.credits") as tap:
        await publish([sms_requested(b["user"]["tenantId"], message, route)])
        reply = await tap.find(lambda e: e["data"]["reference"] == message, 30)
    assert reply["type"] == "billing.credits.rejected.v1" and reply["data"]["reason"] == "insufficient_credits"
    assert (await gateway.get("/api/v1/users/credits", headers=headers_a)).json()["data"]["available"] == 5_000


@pytest.mark.parametrize("params", [{"limit": 101}, {"page": 0}, {"from": "not-a-date"},
                                    {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}])
async def test_bad_history_queries_are_422(gateway, params):
    r = await gateway.post("/api/v1/users/register", json={
        "email": f"h{uuid.uuid4().hex[:10]}@example.com", "password": "long password 1", "name": "H"})
    token = r.json()["data"]["accessToken"]
    for _ in range(50):
        ok = await gateway.get("/api/v1/users/credits", headers={"authorization": f"Bearer {token}"})
        if ok.status_code == 200:
            break
        await asyncio.sleep(0.2)
    bad = await gateway.get("/api/v1/payments/history", params=params, headers={"authorization": f"Bearer {token}"})
    assert bad.status_code == 422 and bad.json()["success"] is False
