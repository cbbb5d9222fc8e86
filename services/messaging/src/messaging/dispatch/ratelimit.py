"""A token bucket per provider, so the workers never call a provider faster than
`sms_provider_rate_per_s` (providers answer 429 above their contracted rate, and a burst of
429s would open the breaker and push traffic to the next provider). The rate is in messages: a
batch call takes one token per message in it.

The bucket lives in Redis (`SharedTokenBucket`), so every worker process sending to a provider
shares its one rate: a second worker (or `worker_desired_count` > 1) would otherwise multiply
what the provider sees. `TokenBucket` is the in-process bucket, used while Redis cannot be
reached."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis
from prometheus_client import Counter

from messaging.providers.base import OutboundSms, SendOutcome, SendResult, SmsProvider
from messaging.providers.routing import Router


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. Waiters are served in arrival order."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = rate
        # A tenth of a second's worth by default: smooth enough for a provider, and a lone OTP
        # never waits.
        self.burst = max(1.0, burst if burst is not None else rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._at = clock()
        self.slice = max(1, int(self.burst // 10))  # tokens taken at a time, in arrival order
        self._lock = asyncio.Lock()

    async def acquire(self, n: int = 1) -> None:
        """Take `n` tokens (a batch: one per message). Taken in slices of a tenth of the burst,
        each in arrival order, so a lone OTP waits behind one slice of each bulk batch under way,
        not behind whole batches; more than is saved up is taken on credit, waiting until the
        bucket is back at zero (so a batch bigger than `burst` still goes, at the rate)."""
        while n > 0:
            take = min(n, self.slice)
            n -= take
            async with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                self._tokens -= take
                if self._tokens < 0:
                    # Holding the lock: later callers queue behind this one.
                    await self._sleep(-self._tokens / self.rate)


log = logging.getLogger("messaging.dispatch")

FALLBACK_S = 5.0  # after a Redis error, pace in-process this long before trying Redis again
BUCKET_FALLBACKS = Counter(
    "sb_sms_rate_bucket_fallbacks_total",
    "Provider rate reservations taken from the in-process bucket because Redis could not be reached",
    ["provider"],
)

# Reserve `tokens` on the bucket's clock (GCRA: the bucket is the time at which it would be
# empty again, `tat`), with Redis' own clock so every process agrees. Answers how long the
# caller waits for its reservation, and the new `tat` (strings: Lua numbers become integers).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + tokens / rate
local wait = tat - burst / rate - now
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return {string.format('%.6f', wait), string.format('%.6f', tat)}
"""


class SharedTokenBucket:
    """`TokenBucket`'s contract (`rate` per second, `burst` saved up, taken in slices of a tenth
    of the burst), kept in Redis under `key` and shared by every process that uses the key.
    Each slice reserves its place on the bucket's clock and sleeps until then, so the callers of
    all processes interleave slice by slice, in the order they asked: a lone OTP waits behind
    the slices already reserved, not behind whole batches. Without Redis, the slices are taken
    from an in-process bucket at the full rate (logged and counted): during a Redis outage, N
    processes may send N times the rate. Redis is tried again `FALLBACK_S` after an error."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        rate: float,
        burst: float | None = None,
        *,
        provider: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.local = TokenBucket(rate, burst, clock=clock, sleep=sleep)
        self.rate, self.burst = self.local.rate, self.local.burst
        self.key = key
        self.provider = provider or key
        self._reserve = redis.register_script(_RESERVE)
        self._sleep = sleep
        self._clock = clock
        self._local_until = 0.0  # after a Redis error, the in-process bucket until then

    async def acquire(self, n: int = 1) -> None:
        while n > 0:
            take = min(n, self.local.slice)
            n -= take
            if self._clock() < self._local_until:
                BUCKET_FALLBACKS.labels(self.provider).inc(take)
                await self.local.acquire(take)
                continue
            try:
                wait, _ = await self._reserve(keys=[self.key], args=[take, self.rate, self.burst])
            except aioredis.RedisError as exc:
                # Not retried slice by slice (each try could cost a timeout): Redis is tried
                # again after FALLBACK_S.
                log.warning("provider rate bucket: Redis unreachable, pacing in-process",
                            extra={"provider": self.provider, "error": repr(exc)})
                self._local_until = self._clock() + FALLBACK_S
                BUCKET_FALLBACKS.labels(self.provider).inc(take)
                await self.local.acquire(take)
                continue
            if float(wait) > 0:
                await self._sleep(float(wait))


class RateLimitedProvider(SmsProvider):
    """A provider whose sends first take a token from its bucket; everything else passes through."""

    def __init__(self, inner: SmsProvider, bucket: TokenBucket | SharedTokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket
        self.name = inner.name
        self.has_delivery_reports = inner.has_delivery_reports
        self.max_batch = inner.max_batch

    async def send(self, to: str, text: str, client_ref: str, sender: str | None = None) -> SendResult:
        await self.bucket.acquire()
        return await self.inner.send(to, text, client_ref, sender)

    async def send_many(self, messages: Sequence[OutboundSms]) -> list[SendOutcome]:
        await self.bucket.acquire(len(messages))
        return await self.inner.send_many(messages)

    def verify_webhook(self, url, headers, body):  # noqa: ANN001, ANN201
        return self.inner.verify_webhook(url, headers, body)

    def parse_delivery_report(self, body, headers=None):  # noqa: ANN001, ANN201
        return self.inner.parse_delivery_report(body, headers)

    async def aclose(self) -> None:
        await self.inner.aclose()


def rate_limit(router: Router, rate_per_s: float, redis: aioredis.Redis | None = None) -> Router:
    """Put a bucket of its own in front of every provider of `router` (in place): shared by all
    processes through `redis` (key `sb:sms:provider-rate:<name>`), else this process's."""
    for name, provider in list(router.providers.items()):
        bucket: TokenBucket | SharedTokenBucket = (
            SharedTokenBucket(redis, f"sb:sms:provider-rate:{name}", rate_per_s, provider=name)
            if redis is not None
            else TokenBucket(rate_per_s)
        )
        router.providers[name] = RateLimitedProvider(provider, bucket)
    return router
