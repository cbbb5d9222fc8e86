"""The per-provider token bucket."""

import asyncio
import time

from messaging.dispatch.dispatcher import backoff_s
from messaging.dispatch.ratelimit import TokenBucket
from messaging.settings import MessagingSettings


async def test_the_bucket_lets_a_burst_through_then_holds_the_rate():
    bucket = TokenBucket(200, burst=10)
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(10)))
    assert time.monotonic() - started < 0.02  # the saved-up burst
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(40)))
    assert 0.17 < time.monotonic() - started < 0.4  # 40 more at 200/s


async def test_a_batch_takes_a_token_per_message_and_a_lone_send_does_not_wait_behind_it():
    bucket = TokenBucket(1000, burst=100)
    started = time.monotonic()
    await bucket.acquire(100)  # the burst
    assert time.monotonic() - started < 0.02
    big = asyncio.create_task(bucket.acquire(300))  # bigger than the burst: goes, at the rate
    await asyncio.sleep(0.05)
    lone = time.monotonic()
    await bucket.acquire()  # an OTP arriving meanwhile waits for a slice, not the whole batch
    assert time.monotonic() - lone < 0.06
    await big
    assert 0.27 < time.monotonic() - started < 0.5  # 301 tokens beyond the burst at 1000/s


def test_backoff_doubles_is_capped_and_honours_retry_after():
    s = MessagingSettings(sms_retry_base_s=1, sms_retry_max_s=300)
    assert [backoff_s(s, a) for a in (1, 2, 3, 9, 20)] == [1, 2, 4, 256, 300]
    assert backoff_s(s, 1, retry_after_s=7) == 7
    assert backoff_s(s, 5, retry_after_s=7) == 16
    assert backoff_s(s, 1, retry_after_s=10_000) == 300
