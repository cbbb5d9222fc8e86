"""The SMS send saga end to end, with the real workers: messages queued with a hold request ->
billing holds (or refuses) -> the messaging worker dispatches through the SMS simulator ->
billing captures. Messages are queued the way the send endpoint does it (rows, history and
messaging.sms.requested.v1 in one transaction), so these tests do not depend on the endpoint;
`test_the_send_endpoint_...` goes through it when it is there.

The simulator is shared with other tests: every check is by our own numbers and client
references, never by global counts."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import httpx
import pytest
from common.contracts.messaging.v1 import SmsRequestedV1
from common.ids import uuid7
from common.messaging import emit_many
from messaging.conversations.repository import ensure_conversations
from messaging.settings import MessagingSettings
from messaging.sms import status as st
from messaging.sms.segments import analyse
from sqlalchemy import text

from tests.support import (
    AUTH_DIRECT,
    SIMULATOR,
    devstack,
    funded_tenant,
    new_tenant,
    random_ip,
    sessions_fixture,
    superuser,
)

SENDER = "+18005550100"
FINAL = ("sent", "delivered")
# The stack is shared and billing's worker may be working off someone's bulk send: generous bounds.
WAIT_S = 90


sessions = sessions_fixture(lambda: MessagingSettings(db_pool_size=2))


def us_phone(ending: str = "") -> str:
    """A random San Francisco number; `ending` picks a simulator rule (0002: outage)."""
    digits = f"{random.randint(2, 9)}{random.randint(0, 99):02d}{random.randint(0, 9999):04d}"
    number = f"+1415{digits}"
    return number[: len(number) - len(ending)] + ending if ending else number


def distinct_phones(n: int) -> list[str]:
    phones: set[str] = set()
    while len(phones) < n:
        phone = us_phone()
        if phone[-4:] not in ("0001", "0002", "0003", "0004", "0005"):
            phones.add(phone)
    return sorted(phones)


async def tenant_of(gateway, headers) -> uuid.UUID:  # noqa: ANN001
    r = await gateway.get("/_svc/auth/whoami", headers=headers)
    assert r.status_code == 200, r.text
    return uuid.UUID(r.json()["data"]["tenantId"])


async def queue(sessions, tenant: uuid.UUID, phones: list[str], body: str) -> list[uuid.UUID]:  # noqa: ANN001
    """What the send endpoint does: messages `queued`, billing pending, and one hold request each."""
    info = analyse(body)
    ids = [uuid7() for _ in phones]
    async with sessions() as s, s.begin():
        conversations = await ensure_conversations(s, tenant, [(SENDER, p) for p in phones])
        await s.execute(
            text(
                "INSERT INTO messages (id, tenant_id, conversation_id, direction, from_number, to_number, body,"
                " encoding, segments, status, billing) SELECT id, :t, c, 'outbound', :f, p, :b, :e, :n, 'queued',"
                " 'pending' FROM unnest(CAST(:ids AS uuid[]), CAST(:cs AS uuid[]), CAST(:ps AS text[])) AS x(id, c, p)"
            ),
            {"t": tenant, "f": SENDER, "b": body, "e": info.encoding, "n": info.segments, "ids": ids,
             "cs": [conversations[(SENDER, p)] for p in phones], "ps": phones},
        )
        await st.record_created(s, ids, st.QUEUED)
        await emit_many(
            s,
            [(SmsRequestedV1(message_id=str(m), tenant_id=str(tenant), to=p, country="US", segments=info.segments),
              str(m)) for m, p in zip(ids, phones, strict=True)],
            tenant_id=str(tenant),
        )
    return ids


async def messages(ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
    async with superuser() as conn:
        rows = await conn.fetch("SELECT * FROM messaging.messages WHERE id = ANY($1)", ids)
    return {r["id"]: dict(r) for r in rows}


async def wait_statuses(ids: list[uuid.UUID], wanted: tuple[str, ...], timeout: float) -> dict[uuid.UUID, dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await messages(ids)
        if all(r["status"] in wanted for r in rows.values()) and len(rows) == len(ids):
            return rows
        if time.monotonic() > deadline:
            waiting = {}
            for r in rows.values():
                key = (r["status"], r["billing"], r["attempts"])
                waiting[key] = waiting.get(key, 0) + 1
            raise AssertionError(f"not all {len(ids)} messages {wanted} within {timeout}s: (status, billing, attempts) -> {waiting}")
        await asyncio.sleep(0.2)


async def holds(ids: list[uuid.UUID]) -> dict[str, str]:
    async with superuser() as conn:
        rows = await conn.fetch(
            "SELECT reference, status FROM billing.holds WHERE business_key = ANY($1)", [f"sms:{m}" for m in ids]
        )
    return {r["reference"]: r["status"] for r in rows}


async def wait_holds(ids: list[uuid.UUID], status: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        found = await holds(ids)
        if len(found) == len(ids) and set(found.values()) == {status}:
            return found
        if time.monotonic() > deadline:
            tally: dict[str, int] = {}
            for s in found.values():
                tally[s] = tally.get(s, 0) + 1
            raise AssertionError(f"holds of {len(ids)} messages not all {status} within {timeout}s: {tally}")
        await asyncio.sleep(0.2)


async def sim_messages(phones: set[str] | None = None, refs: set[str] | None = None) -> list[dict]:
    async with httpx.AsyncClient(base_url=SIMULATOR, timeout=10) as sim:
        found = (await sim.get("/_sim/messages")).json()["messages"]
    return [m for m in found if (phones is None or m["to"] in phones) and (refs is None or m["clientRef"] in refs)]


async def history(message_id: uuid.UUID) -> list[tuple[str, str | None]]:
    async with superuser() as conn:
        rows = await conn.fetch(
            "SELECT status, detail FROM messaging.message_status_history WHERE message_id = $1 ORDER BY id", message_id
        )
    return [(r["status"], r["detail"]) for r in rows]


# -- the saga --------------------------------------------------------------------------------------


async def test_a_funded_tenants_messages_are_sent_into_the_inboxes_and_billing_captures_them(gateway, sessions):
    headers = await funded_tenant(gateway, 1_000)
    tenant = await tenant_of(gateway, headers)
    phones = distinct_phones(5)
    body = f"Saga test {uuid.uuid4().hex[:8]}"
    ids = await queue(sessions, tenant, phones, body)

    rows = await wait_statuses(ids, FINAL, WAIT_S)
    for m in rows.values():
        assert m["billing"] == "reserved" and m["price_minor"] > 0 and m["currency"], m
        assert m["provider"] == "simulator" and m["provider_message_id"] and m["attempts"] == 1
        assert m["next_attempt_at"] is None and m["lease_until"] is None
    # Every recipient has exactly its message, sent under our message id as the client reference.
    async with httpx.AsyncClient(base_url=SIMULATOR, timeout=10) as sim:
        for m in rows.values():
            for _ in range(50):
                inbox = (await sim.get(f"/_sim/inbox/{m['to_number']}")).json()
                if inbox:
                    break
                await asyncio.sleep(0.1)
            assert [(i["text"], i["clientRef"], i["from"]) for i in inbox] == [(body, str(m["id"]), SENDER)]
    assert await wait_holds(ids, "captured", WAIT_S)
    assert [s for s, _ in await history(ids[0])][:2] == ["queued", "sent"]
    assert (await history(ids[0]))[1][1] == "accepted by simulator"


async def test_an_unfunded_tenants_messages_are_rejected_and_never_reach_a_provider(gateway, sessions):
    tenant = await tenant_of(gateway, await new_tenant(gateway))
    phones = distinct_phones(3)
    ids = await queue(sessions, tenant, phones, "Nobody pays for this")

    rows = await wait_statuses(ids, ("rejected",), WAIT_S)
    for m in rows.values():
        assert (m["billing"], m["error"], m["attempts"], m["provider"]) == ("rejected", "insufficient_credits", 0, None)
        assert m["next_attempt_at"] is None
    assert (await history(ids[0]))[-1] == ("rejected", "billing: insufficient_credits")
    await asyncio.sleep(1)  # had anything been dispatched, it would be at the simulator by now
    assert await sim_messages(set(phones)) == []
    assert await holds(ids) == {}


async def test_a_provider_outage_fails_over_and_the_history_says_so(gateway, sessions):
    """The local routes are simulator, then SNS (moto): a number the simulator answers 503 for
    (ending 0002) goes out through SNS on the first attempt. Retries and backoff when no
    provider takes a message are shown in services/messaging/tests/dispatch/."""
    headers = await funded_tenant(gateway, 100)
    tenant = await tenant_of(gateway, headers)
    phone = us_phone("0002")
    [mid] = await queue(sessions, tenant, [phone], "Outage test")

    rows = await wait_statuses([mid], FINAL, WAIT_S)
    assert rows[mid]["provider"] == "sns" and rows[mid]["attempts"] == 1
    sent = [d for s, d in await history(mid) if s == "sent"]
    assert sent and sent[0].startswith("accepted by sns after simulator unavailable"), sent
    assert await sim_messages({phone}) == []  # the simulator refused it: nothing stored there
    assert await wait_holds([mid], "captured", WAIT_S)


@pytest.mark.slow
async def test_the_worker_killed_mid_batch_sends_every_message_exactly_once_and_captures_once(gateway, sessions):
    n = 1000  # enough that the kill lands while claims are in flight (dispatch is ~700/s)
    headers = await funded_tenant(gateway, 10_000)
    tenant = await tenant_of(gateway, headers)
    phones = distinct_phones(n)
    ids = await queue(sessions, tenant, phones, "Kill test")
    started = time.monotonic()

    # Kill as soon as some messages are claimed (leased) but not all are recorded.
    async with superuser() as conn:
        deadline = time.monotonic() + WAIT_S
        while True:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE attempts > 0) AS claimed,"
                " count(*) FILTER (WHERE status <> 'queued') AS done FROM messaging.messages WHERE id = ANY($1)",
                ids,
            )
            if row["claimed"] > 0 and row["done"] < n:
                break
            assert time.monotonic() < deadline, f"the dispatcher never claimed a message: {dict(row)}"
            await asyncio.sleep(0.005)
    assert "signalled" in devstack("ctl", "signal", "KILL", "messaging-worker").stdout
    killed_at = dict(row)
    async with superuser() as conn:
        # Claimed, not recorded: the sends the dead worker had in flight (its transaction died).
        stranded = await conn.fetchval(
            "SELECT count(*) FROM messaging.messages WHERE id = ANY($1) AND status = 'queued'"
            " AND lease_until > now()", ids,
        )
    assert stranded > 0, f"the kill did not land mid-batch: {killed_at}"
    devstack("ctl", "start", "messaging-worker", check=False)  # supervisor restarts it anyway

    # Unrecorded claims wait for their lease (sms_dispatch_lease_s, 30 s) and go again.
    rows = await wait_statuses(ids, FINAL, 30 + 2 * WAIT_S)
    elapsed = time.monotonic() - started
    refs = {str(m) for m in ids}
    at_sim = await sim_messages(refs=refs)
    per_ref: dict[str, int] = {}
    for m in at_sim:
        per_ref[m["clientRef"]] = per_ref.get(m["clientRef"], 0) + 1
    assert len(per_ref) == n and set(per_ref.values()) == {1}, (
        f"{len(per_ref)} of {n} at the simulator, {sum(v > 1 for v in per_ref.values())} twice"
    )
    assert {r["provider"] for r in rows.values()} == {"simulator"}
    await wait_holds(ids, "captured", WAIT_S)
    async with superuser() as conn:
        deadline = time.monotonic() + WAIT_S
        while True:
            captures = await conn.fetchval(
                "SELECT count(*) FROM billing.ledger_transactions WHERE business_key = ANY($1)",
                [f"capture:sms:{m}" for m in ids],
            )
            if captures == n or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        repeated = await conn.fetchval(
            "SELECT count(*) FROM (SELECT message_id FROM messaging.message_status_history WHERE message_id = ANY($1)"
            " AND status IN ('sent', 'delivered') GROUP BY message_id, status HAVING count(*) > 1) x", ids
        )
    assert captures == n
    assert repeated == 0  # no status twice in any history, whatever was sent twice
    print(f"\n{n} messages, worker killed at {killed_at} ({stranded} in flight): all sent in {elapsed:.1f}s"
          " (lease 30 s included)")


# -- OTP -------------------------------------------------------------------------------------------


async def test_an_otp_requested_from_auth_arrives_at_the_phone_and_signs_in():
    phone = us_phone()
    async with httpx.AsyncClient(base_url=AUTH_DIRECT, headers={"X-Real-IP": random_ip()}, timeout=15) as auth:
        r = await auth.post("/api/v1/auth/send-otp", json={"phone": phone})
        assert r.status_code == 202, r.text
        challenge = r.json()["data"]["challengeId"]
        inbox: list[dict] = []
        async with httpx.AsyncClient(base_url=SIMULATOR, timeout=10) as sim:
            for _ in range(100):
                inbox = (await sim.get(f"/_sim/inbox/{phone}")).json()
                if inbox:
                    break
                await asyncio.sleep(0.1)
        assert len(inbox) == 1, f"no SMS for {phone} at the simulator within 10 s"
        text_ = inbox[0]["text"]
        assert text_.startswith("Your Switchboard code is ") and "expires in 5 minutes" in text_
        code = text_.removeprefix("Your Switchboard code is ")[:6]
        r = await auth.post("/api/v1/auth/verify-otp", json={"phone": phone, "code": code, "name": "Otto"})
        assert r.status_code == 200, r.text

    async with superuser() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM messaging.messages WHERE external_id = $1", f"otp:{challenge}"
        )
    assert row["route"] == "otp" and row["billing"] == "none" and row["status"] in FINAL
    assert row["tenant_id"] == uuid.UUID(int=0) and str(row["id"]) == inbox[0]["clientRef"]
    assert code not in row["body"] and "••••••" in row["body"]  # the code does not stay in the database


async def test_the_send_endpoint_queues_messages_that_are_dispatched(gateway):
    """Through `POST /api/v1/sms/send`."""
    headers = await funded_tenant(gateway, 500)
    phones = distinct_phones(2)
    r = await gateway.post("/api/v1/sms/send", json={"message": "Via the endpoint", "recipients": phones},
                           headers=headers)
    assert r.status_code == 202, r.text
    ids = [uuid.UUID(m["id"]) for m in r.json()["data"]["messages"]]
    assert len(ids) == 2
    await wait_statuses(ids, FINAL, WAIT_S)
    assert await wait_holds(ids, "captured", WAIT_S)


@pytest.mark.slow
@pytest.mark.parametrize("program", ["kafka", "postgres"])
async def test_a_restart_of_the_broker_or_the_database_mid_send_loses_nothing_and_sends_nothing_twice(
    gateway, program
):
    """A send through the API with Kafka (or PostgreSQL) restarted while its holds, dispatch and
    delivery reports are in flight: every message ends delivered, each reached its
    handset once, each hold was captured once, and the balance fell by exactly the price."""
    n = 400 if program == "kafka" else 2000  # PostgreSQL stops in well under a second: a longer send
    headers = await funded_tenant(gateway, 20_000)
    r = await gateway.get("/api/v1/payments/prices", params={"country": "US"}, headers=headers)
    price = r.json()["data"]["segmentPrice"]
    phones = distinct_phones(n)
    # Kafka goes down as the send is accepted (the holds, the dispatch and the reports all wait for
    # it); PostgreSQL just after the 202 (sends and reports are in flight: webhooks get 5xx and
    # the simulator retries them, the workers reconnect).
    restarting = None
    if program == "kafka":
        restarting = asyncio.create_task(asyncio.to_thread(devstack, "ctl", "restart", program, check=False))
        await asyncio.sleep(0.5)
    r = await gateway.post("/api/v1/sms/send", json={"message": f"Restart {program}", "recipients": phones},
                           headers={**headers, "Idempotency-Key": f"restart-{uuid.uuid4().hex}"})
    assert r.status_code == 202, r.text
    ids = [uuid.UUID(m["id"]) for m in r.json()["data"]["messages"]]
    if restarting is None:
        restarting = asyncio.create_task(asyncio.to_thread(devstack, "ctl", "restart", program, check=False))
    restart = await restarting
    assert "started" in restart.stdout, restart.stdout + restart.stderr
    at_restart: dict[str, int] = {}
    for row in (await messages(ids)).values():
        at_restart[row["status"]] = at_restart.get(row["status"], 0) + 1
    print(f"\n{program} restarted; the {n} messages then: {at_restart}")

    await wait_statuses(ids, ("delivered",), 180)
    per_ref: dict[str, int] = {}
    for m in await sim_messages(refs={str(i) for i in ids}):
        per_ref[m["clientRef"]] = per_ref.get(m["clientRef"], 0) + 1
    assert len(per_ref) == n and set(per_ref.values()) == {1}, f"{len(per_ref)} of {n} at the simulator"
    await wait_holds(ids, "captured", 120)
    deadline = time.monotonic() + 60
    while True:
        r = await gateway.get("/api/v1/users/credits", headers=headers)
        if r.status_code == 200 and r.json()["data"]["balance"] == 20_000 - n * price:
            break
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.5)
    assert r.json()["data"]["held"] == 0
