"""The dispatcher against the real messaging schema and a simulator process of its own.

Each test's messages carry a route of their own (`t-<random>`), so the stack's messaging worker
(which claims `standard` and `otp`) never touches them, and the lane under test never touches
anyone else's. Rows are committed (the claim and the record are separate transactions, as in
production) and deleted at the end."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from common.db import create_engine, create_session_factory
from common.ids import uuid7
from messaging.dispatch import repository as repo
from messaging.dispatch.dispatcher import Lane, bulk_in_flight
from messaging.dispatch.otp import redact
from messaging.providers.http_gateway import HttpGatewayProvider
from messaging.providers.routing import Router
from messaging.settings import MessagingSettings
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[4]
SENDER = "+18005550100"
SETTINGS = MessagingSettings(
    db_pool_size=3, sms_retry_base_s=0.2, sms_retry_max_s=1, sms_max_attempts=3,
    sms_dispatch_poll_s=0.05, sms_dispatch_lease_s=30,
)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("sim") / "sms-simulator.log"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "sms_simulator.py"), "--port", str(port), "--api-key", "k",
         "--webhook-url", "", "--report-delay", "0.05"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def sessions():
    engine = create_engine(SETTINGS)
    yield create_session_factory(engine, SETTINGS)
    await engine.dispose()


@pytest.fixture
async def route(sessions):
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    async with sessions() as s, s.begin():
        await s.execute(text("DELETE FROM messages WHERE route = :r"), {"r": name})


def router(simulator: str) -> Router:
    provider = HttpGatewayProvider("simulator", base_url=simulator, api_key="k", webhook_secrets=["x"], timeout_s=5)
    return Router({"simulator": provider}, {"*": ["simulator"]}, failure_threshold=1000)


async def add(sessions, route: str, phones: list[str], *, body: str = "hello", due_in_s: float = 0.0,  # noqa: ANN001
              lease_in_s: float | None = None) -> list[uuid.UUID]:
    tenant, conv = uuid.uuid4(), uuid7()
    ids = [uuid7() for _ in phones]
    async with sessions() as s, s.begin():
        await s.execute(
            text("INSERT INTO conversations (id, tenant_id, our_number, peer_number) VALUES (:c, :t, :o, '+1')"),
            {"c": conv, "t": tenant, "o": SENDER},
        )
        await s.execute(
            text(
                "INSERT INTO messages (id, tenant_id, conversation_id, direction, from_number, to_number, body,"
                " encoding, segments, status, billing, route, next_attempt_at, lease_until)"
                " SELECT id, :t, :c, 'outbound', :f, p, :b, 'GSM-7', 1, 'queued', 'reserved', :r,"
                " now() + make_interval(secs => :due), now() + make_interval(secs => :lease)"
                " FROM unnest(CAST(:ids AS uuid[]), CAST(:ps AS text[])) AS x(id, p)"
            ),
            {"t": tenant, "c": conv, "f": SENDER, "b": body, "r": route, "due": due_in_s,
             "lease": lease_in_s, "ids": ids, "ps": phones},
        )
    return ids


async def rows(sessions, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:  # noqa: ANN001
    async with sessions() as s:
        result = await s.execute(text("SELECT * FROM messages WHERE id = ANY(:ids)"), {"ids": ids})
        return {r.id: dict(r._mapping) for r in result}


async def history(sessions, message_id: uuid.UUID) -> list[tuple[str, str]]:  # noqa: ANN001
    async with sessions() as s:
        result = await s.execute(
            text("SELECT status, detail FROM message_status_history WHERE message_id = :m ORDER BY id"),
            {"m": message_id},
        )
        return [(r.status, r.detail) for r in result]


async def until(predicate, timeout: float = 10.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def sim(simulator: str, method: str, path: str, **kw) -> httpx.Response:  # noqa: ANN003
    async with httpx.AsyncClient(base_url=simulator, timeout=5) as c:
        return await c.request(method, path, **kw)


def numbers(n: int, ending: str = "") -> list[str]:
    """Numbers no default simulator rule matches (unless `ending` asks for one)."""
    exchange, start = random.randint(200, 999), random.randint(1000, 8000)
    phones = [f"+1415{exchange}{start + i:04d}" for i in range(n)]
    return [p[: len(p) - len(ending)] + ending for p in phones] if ending else phones


# -- the claim -------------------------------------------------------------------------------------


async def test_a_claim_takes_due_unleased_messages_once_and_leases_them(sessions, route):
    due = await add(sessions, route, numbers(3))
    later = await add(sessions, route, numbers(1), due_in_s=60)
    leased = await add(sessions, route, numbers(1), lease_in_s=60)
    expired = await add(sessions, route, numbers(1), lease_in_s=-1)

    async with sessions() as s, s.begin():
        first = await repo.claim(s, route, 10, 30)
    async with sessions() as s, s.begin():
        again = await repo.claim(s, route, 10, 30)
    assert sorted(c.id for c in first) == sorted(due + expired) and again == []
    assert {c.attempts for c in first} == {1}
    state = await rows(sessions, due + later + leased)
    assert all(state[m]["lease_until"] is not None for m in due)
    assert state[later[0]]["attempts"] == 0 and state[leased[0]]["attempts"] == 0
    async with sessions() as s:
        assert 0 < await repo.next_due_in(s, route) <= 30  # the leased ones, then the later one


async def test_two_dispatchers_claiming_at_once_never_take_the_same_message(sessions, route):
    ids = await add(sessions, route, numbers(40))

    async def claim() -> list[uuid.UUID]:
        async with sessions() as s, s.begin():
            return [c.id for c in await repo.claim(s, route, 15, 30)]

    results = await asyncio.gather(claim(), claim(), claim())
    taken = [m for r in results for m in r]
    assert len(taken) == len(set(taken)) == 40 and set(taken) == set(ids)


# -- the lane --------------------------------------------------------------------------------------


async def run_lane(lane: Lane, until_done, timeout: float = 15.0):  # noqa: ANN001, ANN201
    stop = asyncio.Event()
    task = asyncio.create_task(lane.run(stop))
    try:
        return await until(until_done, timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_messages_are_sent_once_with_their_id_as_client_reference(sessions, route, simulator):
    phones = numbers(50)
    ids = await add(sessions, route, phones, body="bulk")
    lane = Lane(SETTINGS, sessions, router(simulator), route=route, concurrency=8, batch=20)

    async def all_sent():
        state = await rows(sessions, ids)
        return all(r["status"] == "sent" for r in state.values()) and state

    state = await run_lane(lane, all_sent)
    for r in state.values():
        assert (r["provider"], r["attempts"], r["next_attempt_at"], r["lease_until"]) == ("simulator", 1, None, None)
        assert r["provider_message_id"].startswith("sim_") and r["sent_at"] is not None
    sent = (await sim(simulator, "GET", "/_sim/messages")).json()["messages"]
    refs = [m["clientRef"] for m in sent if m["to"] in phones]
    assert sorted(refs) == sorted(str(m) for m in ids)
    assert await history(sessions, ids[0]) == [("sent", "accepted by simulator")]


async def test_claimed_messages_go_to_the_provider_in_batches_with_outcomes_per_message(sessions, route, simulator):
    phones = numbers(57)
    phones[10] = phones[10][:-4] + "0001"  # refused for good
    phones[40] = phones[40][:-4] + "0002"  # not now (this message only)
    ids = await add(sessions, route, phones)
    before = (await sim(simulator, "GET", "/_sim/stats")).json()
    lane = Lane(SETTINGS, sessions, router(simulator), route=route, concurrency=4, batch=30, send_batch=10)

    async def settled():
        state = await rows(sessions, ids)
        return all(r["status"] in ("sent", "failed") for r in state.values()) and state

    state = await run_lane(lane, settled)
    after = (await sim(simulator, "GET", "/_sim/stats")).json()
    calls = after["batchRequests"] - before["batchRequests"]
    assert after["requests"] - before["requests"] == calls  # no single sends
    assert 6 <= calls <= 16  # 57 messages (and two retries) in calls of at most 10
    assert {r["status"] for i, r in state.items() if i not in (ids[10], ids[40])} == {"sent"}
    assert (state[ids[10]]["status"], state[ids[10]]["attempts"]) == ("failed", 1)
    assert "permanent rejection" in state[ids[10]]["error"]
    # Retried on its own (backoff) until it gave up; its batch neighbours were not held back.
    assert (state[ids[40]]["attempts"], state[ids[40]]["error"]) == (3, "no provider available")
    retry = [d for s, d in await history(sessions, ids[40]) if s == "queued"]
    assert retry[0].startswith("attempt 1: router: no provider took the message for US: simulator (unavailable)")


async def test_no_provider_now_backs_off_and_the_message_goes_when_the_provider_is_back(sessions, route, simulator):
    [phone] = numbers(1)
    await sim(simulator, "POST", "/_sim/rules", json={"suffix": phone, "action": "outage"})
    [mid] = await add(sessions, route, [phone])
    lane = Lane(SETTINGS.model_copy(update={"sms_max_attempts": 10}), sessions, router(simulator), route=route,
                concurrency=2)

    stop = asyncio.Event()
    task = asyncio.create_task(lane.run(stop))
    try:
        async def retried_twice():
            r = (await rows(sessions, [mid]))[mid]
            return r["attempts"] >= 2 and r["lease_until"] is None and r

        r = await until(retried_twice)
        assert r["status"] == "queued" and r["next_attempt_at"] is not None
        retries = [d for s, d in await history(sessions, mid) if s == "queued"]
        assert retries[0].startswith("attempt 1: router: no provider took the message for US: simulator (unavailable)") and "next attempt in 0.2s" in retries[0]
        assert "next attempt in 0.4s" in retries[1]  # doubled
        await sim(simulator, "DELETE", f"/_sim/rules/{phone}")

        async def sent():
            return (await rows(sessions, [mid]))[mid]["status"] == "sent"

        await until(sent)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_permanent_refusals_and_exhausted_retries_fail_the_message(sessions, route, simulator):
    [refused] = await add(sessions, route, numbers(1, "0001"))
    [down] = await add(sessions, route, numbers(1, "0002"))
    lane = Lane(SETTINGS, sessions, router(simulator), route=route, concurrency=2)

    async def both_failed():
        state = await rows(sessions, [refused, down])
        return all(r["status"] == "failed" for r in state.values()) and state

    state = await run_lane(lane, both_failed)
    assert state[refused]["attempts"] == 1 and "permanent rejection" in state[refused]["error"]
    assert (state[down]["attempts"], state[down]["error"]) == (3, "no provider available")
    assert (await history(sessions, down))[-1][1].startswith("gave up after 3 attempts")


async def test_an_expired_lease_is_claimed_again_and_the_provider_drops_the_repeat(sessions, route, simulator):
    """What a killed worker leaves behind: sent, never recorded, lease running out."""
    [phone] = numbers(1)
    [mid] = await add(sessions, route, [phone])
    first = await router(simulator).send(phone, "hello", str(mid), SENDER)  # the dead worker's send
    async with sessions() as s, s.begin():
        await s.execute(text("UPDATE messages SET attempts = 1, lease_until = now() - interval '1 second'"
                             " WHERE id = :m"), {"m": mid})
    lane = Lane(SETTINGS, sessions, router(simulator), route=route, concurrency=2)

    async def sent():
        r = (await rows(sessions, [mid]))[mid]
        return r["status"] == "sent" and r

    r = await run_lane(lane, sent)
    assert r["provider_message_id"] == first.result.provider_message_id and r["attempts"] == 2
    stats = [m for m in (await sim(simulator, "GET", "/_sim/messages")).json()["messages"] if m["to"] == phone]
    assert len(stats) == 1


async def test_an_otp_lane_masks_the_code_once_the_message_is_gone(sessions, route, simulator):
    template = SETTINGS.sms_otp_text
    body = template.format(code="482913", minutes=5)
    [phone] = numbers(1)
    [mid] = await add(sessions, route, [phone], body=body)
    lane = Lane(SETTINGS, sessions, router(simulator), route=route, concurrency=2,
                redact=lambda b: redact(b, template))

    async def masked():
        r = (await rows(sessions, [mid]))[mid]
        return r["status"] == "sent" and r

    r = await run_lane(lane, masked)
    assert r["body"] == "Your Switchboard code is ••••••. It expires in 5 minutes."

    async def delivered():
        return (await sim(simulator, "GET", f"/_sim/inbox/{phone}")).json()

    inbox = await until(delivered)
    assert [m["text"] for m in inbox] == [body]  # the phone got the code, the database no longer has it


async def test_an_expired_otp_fails_unsent_and_one_that_would_expire_while_waiting_gives_up(
    sessions, route, simulator
):
    """A code past its expiry (a backlog after an outage) is worthless: it fails as `expired`,
    masked, and never reaches the phone; one whose retry would come after its expiry gives up."""
    template = SETTINGS.sms_otp_text
    [late] = numbers(1)
    [down] = numbers(1, ending="0002")  # the simulator's outage rule: "not now"
    ids = await add(sessions, route, [late, down], body=template.format(code="482913", minutes=5))
    async with sessions() as s, s.begin():
        await s.execute(text("UPDATE messages SET expires_at = now() - interval '1 second' WHERE id = :m"),
                        {"m": ids[0]})
        await s.execute(text("UPDATE messages SET expires_at = now() + interval '0.5 seconds' WHERE id = :m"),
                        {"m": ids[1]})
    lane = Lane(SETTINGS, sessions, router(simulator), route=route, concurrency=2,
                redact=lambda b: redact(b, template))

    async def both_failed():
        state = await rows(sessions, ids)
        return all(r["status"] == "failed" for r in state.values()) and state

    state = await run_lane(lane, both_failed)
    assert {r["error"] for r in state.values()} == {"expired"}
    assert all("••••••" in r["body"] for r in state.values())
    assert (await history(sessions, ids[0])) == [("failed", "expired before it could be sent")]
    assert (await history(sessions, ids[1]))[-1][1].startswith("expired before it could be sent (last attempt:")
    sent = [m for m in (await sim(simulator, "GET", "/_sim/messages")).json()["messages"] if m["to"] in (late, down)]
    assert sent == []


async def test_a_throttled_message_waits_at_least_as_long_as_the_provider_asked(sessions, route, simulator):
    """The simulator throttles numbers ending in 0005 with `retryAfter` 1 s; the base backoff
    here is 0.2 s, so the retry is scheduled by the provider's Retry-After, through the router."""
    [mid] = await add(sessions, route, numbers(1, "0005"))
    lane = Lane(SETTINGS, sessions, router(simulator), route=route, concurrency=2)

    async def retried():
        return [d for s, d in await history(sessions, mid) if s == "queued"]

    [first, *_] = await run_lane(lane, retried)
    assert first.startswith("attempt 1: router: no provider took the message for US: simulator (unavailable)")
    assert first.endswith("next attempt in 1s"), first


def test_the_bulk_lane_claims_a_second_of_sending_ahead_but_never_half_a_lease():
    # At 1,000/s a second's worth is claimed ahead: a stalled claim leaves the bucket busy.
    assert bulk_in_flight(MessagingSettings(sms_provider_rate_per_s=1000)) == 1000
    # A slow provider: 400 (two claims' worth) would take 40 s, past the 30 s lease, and be
    # claimed again by another worker; half a lease at the rate is the cap.
    assert bulk_in_flight(MessagingSettings(sms_provider_rate_per_s=10)) == 150
    # Never less than one provider batch, whatever the settings.
    assert bulk_in_flight(MessagingSettings(sms_provider_rate_per_s=1, sms_dispatch_send_batch=100)) == 100
    # A fast one: at least two claims' worth.
    assert bulk_in_flight(MessagingSettings(sms_provider_rate_per_s=100, sms_dispatch_batch=200)) == 400
