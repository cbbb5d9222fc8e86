"""The per-provider token bucket, on a virtual clock: its waits are computed, so the tests check
the arithmetic exactly instead of timing a shared, noisy machine."""

import asyncio
import uuid

import redis.asyncio as aioredis
from messaging.dispatch.dispatcher import backoff_s
from messaging.dispatch.ratelimit import (
    RateLimitedProvider,
    SharedTokenBucket,
    TokenBucket,
    rate_limit,
)
from messaging.providers.registry import build_router
from messaging.settings import MessagingSettings


class VirtualClock:
    """`now` moves only when the bucket sleeps. The bucket sleeps while holding its lock, so one
    sleep runs at a time and advancing by each sleep is exactly what a real clock would show."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other tasks queue up meanwhile, as they would


def bucket_on(clock: VirtualClock, rate: float, burst: float) -> TokenBucket:
    return TokenBucket(rate, burst=burst, clock=clock, sleep=clock.sleep)


async def test_the_bucket_lets_a_burst_through_then_holds_the_rate():
    clock = VirtualClock()
    bucket = bucket_on(clock, 200, burst=10)
    await asyncio.gather(*(bucket.acquire() for _ in range(10)))
    assert clock.slept == []  # the saved-up burst goes at once
    started = clock.now
    await asyncio.gather(*(bucket.acquire() for _ in range(40)))
    assert abs((clock.now - started) - 40 / 200) < 1e-9  # 40 more at exactly 200/s


async def test_time_away_refills_the_bucket_but_never_beyond_the_burst():
    clock = VirtualClock()
    bucket = bucket_on(clock, 100, burst=20)
    await bucket.acquire(20)
    clock.now += 3600  # an hour idle saves up only the burst
    await bucket.acquire(20)
    assert clock.slept == []
    await bucket.acquire(5)
    assert abs(sum(clock.slept) - 5 / 100) < 1e-9


async def test_a_batch_takes_a_token_per_message_and_a_lone_send_does_not_wait_behind_it():
    clock = VirtualClock()
    bucket = bucket_on(clock, 1000, burst=100)
    await bucket.acquire(100)  # the burst
    assert clock.slept == []
    started = clock.now
    big = asyncio.create_task(bucket.acquire(300))  # bigger than the burst: goes, at the rate
    while clock.now - started < 0.05:  # the batch is a good way in
        await asyncio.sleep(0)
    lone_at = clock.now
    await bucket.acquire()  # an OTP arriving meanwhile waits for one slice, not the whole batch
    lone_waited = clock.now - lone_at
    assert lone_waited <= 2 * 10 / 1000 + 1e-9  # at most the slice under way and its own token
    assert not big.done()
    await big
    assert abs((clock.now - started) - 301 / 1000) < 1e-9  # 301 tokens beyond the burst at 1000/s


# -- shared by every worker process through Redis ---------------------------------------------------


async def test_two_processes_buckets_share_one_rate_in_the_order_they_ask():
    redis = aioredis.from_url(MessagingSettings().redis_url)
    key = f"sb:test:provider-rate:{uuid.uuid4()}"
    try:
        # Two workers' buckets for one provider: 1 token/s, 2 saved up (slices of 1).
        # Their sleeps are recorded, not slept (the waits come from Redis' clock).
        a_sleeps, b_sleeps = VirtualClock(), VirtualClock()
        a = SharedTokenBucket(redis, key, 1, burst=2, sleep=a_sleeps.sleep)
        b = SharedTokenBucket(redis, key, 1, burst=2, sleep=b_sleeps.sleep)
        await a.acquire(2)  # the burst: free
        assert a_sleeps.slept == []
        start = float(await redis.get(key))  # the time the bucket is empty again, on Redis' clock
        for _ in range(4):
            await a.acquire()
            await b.acquire()
        # Eight tokens beyond the burst at 1/s: the reservations moved the bucket 8 s on, and
        # each process waited a second longer than the other's last reservation.
        assert abs(float(await redis.get(key)) - start - 8) < 1e-5
        waits = [w for pair in zip(a_sleeps.slept, b_sleeps.slept, strict=True) for w in pair]
        assert len(waits) == 8 and all(later - earlier > 0.9 for earlier, later in zip(waits, waits[1:], strict=False))
        assert 0 < waits[0] <= 1 and 7 < waits[-1] <= 8
        assert 0 < await redis.pttl(key) <= 11_000  # it expires once idle
    finally:
        await redis.delete(key)
        await redis.aclose()


async def test_without_redis_a_bucket_paces_in_process_then_tries_redis_again():
    clock = VirtualClock()
    redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)  # nothing listens
    try:
        bucket = SharedTokenBucket(redis, "sb:test:nowhere", 10, burst=10, clock=clock, sleep=clock.sleep)
        tries = 0
        reserve = bucket._reserve  # noqa: SLF001

        async def counted(**kwargs):  # noqa: ANN003, ANN202
            nonlocal tries
            tries += 1
            return await reserve(**kwargs)

        bucket._reserve = counted  # noqa: SLF001
        await bucket.acquire(10)  # the local burst
        await bucket.acquire(5)
        assert abs(sum(clock.slept) - 5 / 10) < 1e-9  # paced at the rate all the same
        assert tries == 1  # one failed try, not one per slice
        clock.now += 60
        await bucket.acquire(1)
        assert tries == 2  # and Redis is tried again later
    finally:
        await redis.aclose()


def test_the_dispatchers_providers_get_the_shared_bucket_when_given_redis():
    settings = MessagingSettings(sms_routes={"*": ["simulator"]})
    redis = aioredis.from_url(settings.redis_url)
    shared = rate_limit(build_router(settings), 500, redis).providers["simulator"]
    assert isinstance(shared, RateLimitedProvider) and isinstance(shared.bucket, SharedTokenBucket)
    assert shared.bucket.key == "sb:sms:provider-rate:simulator" and shared.bucket.rate == 500
    local = rate_limit(build_router(settings), 500).providers["simulator"]
    assert isinstance(local.bucket, TokenBucket)


def test_backoff_doubles_is_capped_and_honours_retry_after():
    s = MessagingSettings(sms_retry_base_s=1, sms_retry_max_s=300)
    assert [backoff_s(s, a) for a in (1, 2, 3, 9, 20)] == [1, 2, 4, 256, 300]
    assert backoff_s(s, 1, retry_after_s=7) == 7
    assert backoff_s(s, 5, retry_after_s=7) == 16
    assert backoff_s(s, 1, retry_after_s=10_000) == 300
