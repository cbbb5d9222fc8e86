"""Events across services, through the gateway: auth.user.registered -> billing opens the account."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

from tests.support import LOGS, devstack, superuser


def ctl(*args: str) -> str:
    """`devstack.py ctl ...`, unchecked (supervisorctl calls starting a running program an
    error): what it said."""
    r = devstack("ctl", *args, check=False)
    return r.stdout + r.stderr


async def register(gateway, headers=None) -> dict:  # noqa: ANN001
    email = f"u{uuid.uuid4().hex[:12]}@example.com"
    r = await gateway.post(
        "/api/v1/users/register",
        json={"email": email, "password": "correct horse 1", "name": "Test User", "tenantName": "T"},
        headers=headers or {},
    )
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def wait_credits(gateway, token: str, timeout: float = 30) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        r = await gateway.get("/api/v1/users/credits", headers={"authorization": f"Bearer {token}"})
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        assert r.status_code == 404 and r.json()["code"] == "ACCOUNT_NOT_FOUND", r.text
        await asyncio.sleep(0.2)


async def test_registration_event_opens_exactly_one_credit_account_visible_through_the_gateway(gateway):
    data = await register(gateway)
    r = await wait_credits(gateway, data["accessToken"])
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"balance": 0, "held": 0, "available": 0, "currency": "USD"}

    tenant = data["user"]["tenantId"]
    async with superuser() as conn:
        event_id = await conn.fetchval(
            "SELECT event_id FROM auth.outbox WHERE event_type = 'auth.user.registered.v1' "
            "AND envelope->>'subject' = $1",
            data["user"]["id"],
        )
        assert event_id is not None
        assert await conn.fetchval(
            "SELECT count(*) FROM billing.inbox WHERE event_id = $1 AND consumer_group = 'billing'",
            event_id,
        ) == 1
        assert await conn.fetchval("SELECT count(*) FROM billing.accounts WHERE tenant_id = $1", tenant) == 1
        # Billing announced it, through its own outbox.
        assert await conn.fetchval(
            "SELECT count(*) FROM billing.outbox WHERE event_type = 'billing.account.opened.v1' "
            "AND envelope->>'tenantid' = $1",
            tenant,
        ) == 1


async def test_one_trace_id_and_request_id_run_from_the_gateway_into_the_consumer(gateway):
    request_id = f"trace-test-{secrets.token_hex(6)}"
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    data = await register(gateway, {"X-Request-ID": request_id, "traceparent": traceparent})
    assert (await wait_credits(gateway, data["accessToken"])).status_code == 200

    def lines(name: str) -> list[dict]:
        out = []
        for raw in (LOGS / f"{name}.log").read_text().splitlines():
            if request_id in raw:
                out.append(json.loads(raw))
        return out

    deadline = time.monotonic() + 10
    while not lines("billing-worker") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    api = lines("auth-api")
    consumer = lines("billing-worker")
    assert api and all(line["trace_id"] == trace_id for line in api), api
    # The handler's own log line, written while it handled the event: the trace and request id
    # reached the handler's code through the event's envelope.
    opened = [line for line in consumer if line["msg"] == "account opened"]
    assert opened and opened[0]["trace_id"] == trace_id, consumer
    assert opened[0]["request_id"] == request_id and opened[0]["tenant_id"] == data["user"]["tenantId"]


async def test_billing_worker_killed_mid_stream_opens_every_account_once(gateway):
    users = []
    for i in range(12):
        users.append(await register(gateway))
        if i == 4:
            assert "signalled" in ctl("signal", "KILL", "billing-worker")
    ctl("start", "billing-worker")  # supervisor restarts it anyway; make sure it is up
    for user in users:
        r = await wait_credits(gateway, user["accessToken"], timeout=60)
        assert r.status_code == 200, r.text
    async with superuser() as conn:
        tenants = [u["user"]["tenantId"] for u in users]
        rows = await conn.fetch(
            "SELECT tenant_id, count(*) AS n FROM billing.accounts WHERE tenant_id = ANY($1) "
            "GROUP BY tenant_id",
            tenants,
        )
        assert sorted(r["tenant_id"] for r in rows) == sorted(tenants)
        assert all(r["n"] == 1 for r in rows)
