"""Routing across real simulator processes: country routes, failover on outages, no failover on
rejections, and the circuit breaker (moved through its states with a fake clock)."""

from __future__ import annotations

import uuid

import pytest
from messaging.providers import (
    BreakerState,
    CircuitBreaker,
    NoProviderAvailable,
    OutboundSms,
    ProviderRejected,
    Router,
)

THRESHOLD, OPEN_FOR = 3, 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def router(sim_a, sim_b, clock):
    r = Router(
        {"a": sim_a.provider("a"), "b": sim_b.provider("b")},
        {"US": ["a", "b"], "*": ["b"]},
        failure_threshold=THRESHOLD,
        open_for_s=OPEN_FOR,
        clock=clock,
    )
    yield r
    await r.aclose()


def ref() -> str:
    return str(uuid.uuid4())


async def test_a_us_number_goes_to_the_first_provider_of_its_route(router, sim_a, sim_b, new_phone):
    phone = new_phone()
    sent = await router.send(phone, "hi", ref())
    assert (sent.provider, sent.attempts) == ("a", ())
    await sim_a.wait_inbox(phone)
    assert (await sim_b.stats())["requests"] == 0


async def test_other_countries_take_the_default_route(router, sim_a, sim_b):
    phone = "+4915112345678"  # DE
    assert router.candidates(phone) == ("DE", ["b"])
    assert (await router.send(phone, "hallo", ref())).provider == "b"
    await sim_b.wait_inbox(phone)
    assert (await sim_a.stats())["requests"] == 0


async def test_an_outage_fails_over_to_the_next_provider(router, sim_a, sim_b, new_phone):
    await sim_a.outage(True)
    phone = new_phone()
    sent = await router.send(phone, "your code is 1234", ref())
    assert sent.provider == "b"
    [attempt] = sent.attempts
    assert (attempt.provider, attempt.outcome) == ("a", "unavailable")
    [received] = await sim_b.wait_inbox(phone)
    assert received["text"] == "your code is 1234"
    assert await sim_a.inbox(phone) == []
    assert router.breakers["a"].consecutive_failures == 1


async def test_a_rejection_does_not_fail_over(router, sim_a, sim_b):
    with pytest.raises(ProviderRejected):
        await router.send("+14155550001", "hi", ref())  # sim-a refuses ...0001 for good
    assert (await sim_b.stats())["requests"] == 0
    assert router.breakers["a"].state is BreakerState.CLOSED


async def test_the_breaker_opens_after_n_failures_then_half_opens_after_t(router, sim_a, sim_b, clock, new_phone):
    await sim_a.outage(True)
    for _ in range(THRESHOLD):
        assert (await router.send(new_phone(), "hi", ref())).provider == "b"
    breaker = router.breakers["a"]
    assert breaker.state is BreakerState.OPEN
    assert (await sim_a.stats())["requests"] == THRESHOLD

    # Open: sim-a is not even called.
    sent = await router.send(new_phone(), "hi", ref())
    assert sent.provider == "b"
    assert [(a.provider, a.outcome) for a in sent.attempts] == [("a", "skipped")]
    clock.advance(OPEN_FOR - 1)
    await router.send(new_phone(), "hi", ref())
    assert (await sim_a.stats())["requests"] == THRESHOLD

    # Half-open after T: one trial; sim-a still down, so open again for another T.
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert (await router.send(new_phone(), "hi", ref())).provider == "b"
    assert (await sim_a.stats())["requests"] == THRESHOLD + 1
    assert breaker.state is BreakerState.OPEN
    await router.send(new_phone(), "hi", ref())
    assert (await sim_a.stats())["requests"] == THRESHOLD + 1

    # sim-a recovers; the next trial closes the breaker and sim-a takes traffic again.
    await sim_a.outage(False)
    clock.advance(OPEN_FOR)
    phone = new_phone()
    sent = await router.send(phone, "back", ref())
    assert (sent.provider, sent.attempts) == ("a", ())
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    await sim_a.wait_inbox(phone)


async def test_when_every_provider_fails_the_message_waits_for_a_retry(router, sim_a, sim_b, new_phone):
    await sim_a.outage(True)
    await sim_b.outage(True)
    with pytest.raises(NoProviderAvailable) as caught:
        await router.send(new_phone(), "hi", ref())
    assert [(a.provider, a.outcome) for a in caught.value.attempts] == [("a", "unavailable"), ("b", "unavailable")]
    assert caught.value.maybe_sent is False


async def test_failover_from_an_outaged_simulator_to_sns(sim_a, moto, new_phone):
    from messaging.providers.sns import SnsProvider

    sns = SnsProvider(
        endpoint_url=moto.url, region="us-east-1", access_key_id="testing", secret_access_key="testing"
    )
    r = Router({"simulator": sim_a.provider(), "sns": sns}, {"*": ["simulator", "sns"]})
    await sim_a.outage(True)
    phone = new_phone()
    sent = await r.send(phone, "via aws", ref())
    assert sent.provider == "sns"
    assert any(
        m["message_id"] == sent.result.provider_message_id and m["phone_number"] == phone
        for m in await moto.published_sms()
    )
    await r.aclose()


def test_routes_must_name_known_providers():
    with pytest.raises(ValueError, match="unknown providers"):
        Router({}, {"*": ["nope"]})


# -- the breaker alone -----------------------------------------------------------------------------


def test_half_open_lets_exactly_one_trial_through(clock):
    breaker = CircuitBreaker("t", failure_threshold=2, open_for_s=10, clock=clock)
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.try_acquire()
    clock.advance(10)
    assert breaker.try_acquire()  # the trial
    assert not breaker.try_acquire()  # everyone else waits for its outcome
    breaker.release()  # the trial was cancelled: the slot is free again
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.try_acquire() and breaker.try_acquire()


def test_a_success_resets_the_count_of_consecutive_failures(clock):
    breaker = CircuitBreaker("t", failure_threshold=3, open_for_s=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


# -- batches ---------------------------------------------------------------------------------------


def batch(*phones: str) -> list[OutboundSms]:
    return [OutboundSms(p, f"hi {i}", ref()) for i, p in enumerate(phones)]


async def test_a_batch_fails_over_only_the_messages_the_provider_could_not_take(router, sim_a, sim_b, new_phone):
    ok1, down, ok2 = new_phone(), new_phone(), new_phone()
    await sim_a.rule(down, "outage")  # sim-a answers UNAVAILABLE for this item only
    messages = batch(ok1, down, "+14155550001", ok2)
    first, failed_over, refused, second = await router.send_many(messages)

    assert (first.provider, first.attempts, second.provider, second.attempts) == ("a", (), "a", ())
    assert failed_over.provider == "b"
    [attempt] = failed_over.attempts
    assert (attempt.provider, attempt.outcome) == ("a", "unavailable") and "UNAVAILABLE" in attempt.error
    assert isinstance(refused, ProviderRejected) and refused.provider == "a"  # no failover
    await sim_b.wait_inbox(down)
    for phone in (ok1, ok2):
        await sim_a.wait_inbox(phone)
    a, b = await sim_a.stats(), await sim_b.stats()
    assert (a["batchRequests"], a["batchItems"]) == (1, 4)
    assert (b["batchRequests"], b["batchItems"]) == (1, 1)  # only the one message went on
    # sim-a answered for its messages: one call, one success for its breaker.
    assert router.breakers["a"].consecutive_failures == 0


async def test_a_batch_the_provider_refuses_whole_goes_to_the_next_one_in_one_call(router, sim_a, sim_b, new_phone):
    await sim_a.outage(True)
    phones = [new_phone() for _ in range(30)]
    outcomes = await router.send_many(batch(*phones))
    assert {o.provider for o in outcomes} == {"b"}
    assert all([(a.provider, a.outcome) for a in o.attempts] == [("a", "unavailable")] for o in outcomes)
    assert (await sim_b.stats())["batchRequests"] == 1
    assert router.breakers["a"].consecutive_failures == 1  # one call, one failure


async def test_the_breaker_counts_batch_calls_and_an_open_one_is_skipped(router, sim_a, sim_b, clock, new_phone):
    await sim_a.outage(True)
    for _ in range(THRESHOLD):
        await router.send_many(batch(new_phone(), new_phone()))
    assert router.breakers["a"].state is BreakerState.OPEN
    assert (await sim_a.stats())["batchRequests"] == THRESHOLD
    outcomes = await router.send_many(batch(new_phone(), new_phone()))
    assert [[(a.provider, a.outcome) for a in o.attempts] for o in outcomes] == [[("a", "skipped")]] * 2
    assert (await sim_a.stats())["batchRequests"] == THRESHOLD  # not called

    # A batch whose every message comes back unavailable one by one counts as a failure too.
    await sim_a.outage(False)
    clock.advance(OPEN_FOR)
    down = new_phone()
    await sim_a.rule(down, "outage")
    [o] = await router.send_many(batch(down))
    assert o.provider == "b" and router.breakers["a"].state is BreakerState.OPEN
    clock.advance(OPEN_FOR)
    [o] = await router.send_many(batch(new_phone()))
    assert (o.provider, o.attempts) == ("a", ()) and router.breakers["a"].state is BreakerState.CLOSED


async def test_in_half_open_one_call_of_a_big_batch_is_the_trial(sim_a, sim_b, clock, new_phone):
    r = Router({"a": sim_a.provider("a"), "b": sim_b.provider("b")}, {"*": ["a", "b"]},
               failure_threshold=1, open_for_s=OPEN_FOR, clock=clock)
    r.providers["a"].max_batch = 3
    await sim_a.outage(True)
    await r.send_many(batch(new_phone()))
    assert r.breakers["a"].state is BreakerState.OPEN
    await sim_a.outage(False)
    clock.advance(OPEN_FOR)
    outcomes = await r.send_many(batch(*(new_phone() for _ in range(9))))  # 3 calls' worth
    by = [o.provider for o in outcomes]
    assert by.count("a") == 3 and by.count("b") == 6  # the trial took 3, the others skipped a
    assert (await sim_a.stats())["batchRequests"] == 2  # the failed one, then the trial
    assert r.breakers["a"].state is BreakerState.CLOSED
    await r.aclose()


async def test_a_batch_is_split_by_route_and_by_the_providers_max_batch_and_keeps_its_order(
    router, sim_a, sim_b, new_phone
):
    router.providers["a"].max_batch = 4
    phones = [new_phone() if i % 3 else f"+49151{i:08d}" for i in range(12)]  # every third one DE
    messages = batch(*phones)
    outcomes = await router.send_many(messages)
    assert [o.provider for o in outcomes] == ["b" if p.startswith("+49") else "a" for p in phones]
    assert (await sim_a.stats())["batchRequests"] == 2  # 8 US messages in calls of 4
    assert (await sim_b.stats())["batchRequests"] == 1  # the 4 DE ones
    ids = {m["clientRef"]: m["id"] for m in (await sim_a.messages())["messages"] + (await sim_b.messages())["messages"]}
    assert [ids[m.client_ref] for m in messages] == [o.result.provider_message_id for o in outcomes]


async def test_when_every_provider_fails_each_message_of_a_batch_waits_for_a_retry(router, sim_a, sim_b, new_phone):
    await sim_a.outage(True)
    await sim_b.outage(True)
    outcomes = await router.send_many(batch(new_phone(), new_phone()))
    for o in outcomes:
        assert isinstance(o, NoProviderAvailable) and o.maybe_sent is False
        assert [(a.provider, a.outcome) for a in o.attempts] == [("a", "unavailable"), ("b", "unavailable")]


async def test_a_wait_every_provider_asked_for_travels_with_the_retry(router, sim_a, sim_b, new_phone):
    throttled, down = new_phone(), new_phone()
    for sim in (sim_a, sim_b):
        await sim.rule(throttled, "throttle")  # retryable, retryAfter 1
    await sim_b.rule(down, "throttle")
    await sim_a.rule(down, "outage")  # retryable, no wait given
    waited, unknown = await router.send_many(batch(throttled, down))
    assert isinstance(waited, NoProviderAvailable) and waited.retry_after_s == 1
    assert isinstance(unknown, NoProviderAvailable) and unknown.retry_after_s is None
    with pytest.raises(NoProviderAvailable) as caught:
        await router.send(throttled, "hi", ref())
    assert caught.value.retry_after_s == 1


async def test_a_batch_fails_over_per_message_to_sns_which_sends_one_by_one(sim_a, moto, new_phone):
    """SNS has no batch call: the default send_many publishes each message."""
    from messaging.providers.sns import SnsProvider

    sns = SnsProvider(
        endpoint_url=moto.url, region="us-east-1", access_key_id="testing", secret_access_key="testing"
    )
    r = Router({"simulator": sim_a.provider(), "sns": sns}, {"*": ["simulator", "sns"]})
    ok, down1, down2 = new_phone(), new_phone(), new_phone()
    for phone in (down1, down2):
        await sim_a.rule(phone, "outage")
    outcomes = await r.send_many(batch(ok, down1, down2))
    assert [o.provider for o in outcomes] == ["simulator", "sns", "sns"]
    published = {m["message_id"]: m["phone_number"] for m in await moto.published_sms()}
    assert [published[o.result.provider_message_id] for o in outcomes[1:]] == [down1, down2]
    await r.aclose()
