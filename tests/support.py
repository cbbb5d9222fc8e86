"""Helpers for tests against the real local stack started by `scripts/devstack.py up`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import stripe
from common.db import create_engine, create_session_factory
from common.db.engine import session_info
from common.settings import BaseServiceSettings
from sqlalchemy.ext.asyncio import AsyncSession

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = "http://127.0.0.1:8080"
PG_SOCKET = str(ROOT / ".local" / "pg" / "run")
PG_PORT = 55432
LOGS = ROOT / ".local" / "logs"
SERVICE_PORTS = {
    "auth": 8101,
    "messaging": 8102,
    "chat": 8103,
    "media": 8104,
    "billing": 8105,
    "provider-sync": 8106,
}


def devstack(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `scripts/devstack.py ctl ...` (supervisorctl on the stack's own supervisord)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "devstack.py"), *args],
        check=check, text=True, capture_output=True,
    )


@asynccontextmanager
async def superuser(database: str = "switchboard"):  # noqa: ANN201
    """A raw asyncpg connection as the `postgres` superuser (over the stack's socket), closed
    when the block ends."""
    import asyncpg

    conn = await asyncpg.connect(host=PG_SOCKET, port=PG_PORT, user="postgres", database=database)
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def rollback_session(settings) -> AsyncIterator[AsyncSession]:  # noqa: ANN001
    """A session on the service's real schema whose work is rolled back at the end (the test's
    commits become savepoints), so service-level tests leave nothing behind."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            outer = await conn.begin()
            session = AsyncSession(
                bind=conn,
                expire_on_commit=False,
                join_transaction_mode="create_savepoint",
                info=session_info(settings),
            )
            try:
                yield session
            finally:
                await session.close()
                await outer.rollback()
    finally:
        await engine.dispose()


def sessions_fixture(settings: Callable[[], BaseServiceSettings]):  # noqa: ANN201
    """A module-scoped `sessions` fixture: a session factory on the service's real schema (what
    a test commits is kept), its engine disposed after the module. In a test module:
    `sessions = sessions_fixture(lambda: BillingSettings(db_pool_size=4))`."""

    @pytest.fixture(scope="module")
    async def sessions():  # noqa: ANN202
        config = settings()
        engine = create_engine(config)
        try:
            yield create_session_factory(engine, config)
        finally:
            await engine.dispose()

    return sessions


AUTH_DIRECT = "http://127.0.0.1:8101"
SIMULATOR = "http://127.0.0.1:8430"  # the SMS provider simulator (a phone's inbox: /_sim/inbox/<number>)


def random_phone() -> str:
    """A valid, random US number. Its last four digits are never 0000-0099: the SMS simulator
    acts on numbers ending 0001-0005 (reject, outage, delay, undeliverable, throttle)."""
    import random

    import phonenumbers

    while True:
        area = random.choice([201, 202, 212, 213, 303, 312, 404, 415, 512, 617, 702, 713, 805])
        candidate = f"+1{area}{random.randint(200, 999)}{random.randint(100, 9999):04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate


def random_ip() -> str:
    """A client address of its own (198.18.0.0/15, the benchmarking range) for one test."""
    import random

    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class EventTap:
    """Reads one topic from its end, with a group of its own, and finds events by predicate:
    how a test receives what the platform sends out (an OTP, a reset link)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.seen: list[dict] = []

    async def __aenter__(self) -> EventTap:
        from common.messaging.kafka import make_consumer
        from common.settings import BaseServiceSettings

        settings = BaseServiceSettings(service_name="test-tap", kafka_session_timeout_ms=6000)
        self.consumer = make_consumer(settings, f"tap-{uuid.uuid4().hex}", self.topic)
        await self.consumer.start()
        while not self.consumer.assignment():
            await self.consumer.getmany(timeout_ms=200)
        for tp in self.consumer.assignment():
            await self.consumer.seek_to_end(tp)
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def find(self, predicate, timeout: float = 20.0) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.seen:
                if predicate(event):
                    return event
            batches = await self.consumer.getmany(timeout_ms=300)
            for records in batches.values():
                self.seen.extend(json.loads(r.value) for r in records)
            await asyncio.sleep(0)
        raise AssertionError(f"no matching event on {self.topic} within {timeout}s")


# -- tenants with credit (billing's top-up through localstripe) ---------------------------------

STRIPE_API = "http://127.0.0.1:8420"
SECRETS = ("whsec_local_1", "whsec_local_2")  # scripts/devstack.py: billing accepts both
WEBHOOK = "/api/v1/payments/webhook"


def stripe_client() -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_local", base_addresses={"api": STRIPE_API},
                               http_client=stripe.HTTPXClient(timeout=10))


async def new_tenant(gateway) -> dict[str, str]:  # noqa: ANN001
    """Register a user (a tenant of their own); the bearer header once billing opened the account."""
    r = await gateway.post("/api/v1/users/register", json={
        "email": f"pay-{uuid.uuid4().hex[:12]}@example.com", "password": "correct-horse-battery", "name": "Payer"})
    assert r.status_code == 201, r.text
    headers = {"Authorization": f"Bearer {r.json()['data']['accessToken']}"}
    for _ in range(100):
        if (await gateway.get("/api/v1/users/credits", headers=headers)).status_code == 200:
            return headers
        await asyncio.sleep(0.1)
    raise AssertionError("billing never opened the account")


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4().hex}"}


async def topup(gateway, headers, amount: int, path: str = "topup") -> dict:  # noqa: ANN001
    r = await gateway.post(f"/api/v1/payments/{path}", json={"amount": amount}, headers={**headers, **key()})
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def pay_with_test_card(intent_id: str) -> None:
    """What Stripe.js does in the browser: a card payment method, attached and confirmed."""
    client = stripe_client()
    method = await client.v1.payment_methods.create_async({
        "type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    await client.v1.payment_intents.update_async(intent_id, {"payment_method": method.id})
    confirmed = await client.v1.payment_intents.confirm_async(intent_id)
    assert confirmed.status == "succeeded"


async def credits(gateway, headers) -> dict:  # noqa: ANN001
    r = await gateway.get("/api/v1/users/credits", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def wait_balance(gateway, headers, expected: int, timeout: float = 10.0) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        data = await credits(gateway, headers)
        if data["balance"] == expected or time.monotonic() > deadline:
            assert data["balance"] == expected, data
            return data
        await asyncio.sleep(0.1)



async def funded_tenant(gateway, amount: int) -> dict[str, str]:  # noqa: ANN001
    """A new tenant whose balance holds `amount` minor units, paid by card through localstripe
    and credited by the signed webhook; answers its bearer header."""
    headers = await new_tenant(gateway)
    topped = await topup(gateway, headers, amount)
    await pay_with_test_card(topped["paymentIntentId"])
    await wait_balance(gateway, headers, amount)
    return headers
