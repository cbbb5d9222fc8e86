"""The per-provider token bucket, on a virtual clock: its waits are computed, so the tests check
the arithmetic exactly instead of timing a shared, noisy machine."""

import asyncio

from messaging.dispatch.dispatcher import backoff_s
from messaging.dispatch.ratelimit import TokenBucket
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


def test_backoff_doubles_is_capped_and_honours_retry_after():
    s = MessagingSettings(sms_retry_base_s=1, sms_retry_max_s=300)
    assert [backoff_s(s, a) for a in (1, 2, 3, 9, 20)] == [1, 2, 4, 256, 300]
    assert backoff_s(s, 1, retry_after_s=7) == 7
    assert backoff_s(s, 5, retry_after_s=7) == 16
    assert backoff_s(s, 1, retry_after_s=10_000) == 300
