"""A token bucket per provider, so one worker never calls a provider faster than
`sms_provider_rate_per_s` (providers answer 429 above their contracted rate, and a burst of
429s would open the breaker and push traffic to the next provider). The rate is in messages: a
batch call takes one token per message in it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

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
        self._slice = max(1, int(self.burst // 10))
        self._lock = asyncio.Lock()

    async def acquire(self, n: int = 1) -> None:
        """Take `n` tokens (a batch: one per message). Taken in slices of a tenth of the burst,
        each in arrival order, so a lone OTP waits behind one slice of each bulk batch under way,
        not behind whole batches; more than is saved up is taken on credit, waiting until the
        bucket is back at zero (so a batch bigger than `burst` still goes, at the rate)."""
        while n > 0:
            take = min(n, self._slice)
            n -= take
            async with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                self._tokens -= take
                if self._tokens < 0:
                    # Holding the lock: later callers queue behind this one.
                    await self._sleep(-self._tokens / self.rate)


class RateLimitedProvider(SmsProvider):
    """A provider whose sends first take a token from its bucket; everything else passes through."""

    def __init__(self, inner: SmsProvider, bucket: TokenBucket) -> None:
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


def rate_limit(router: Router, rate_per_s: float) -> Router:
    """Put a bucket of its own in front of every provider of `router` (in place)."""
    for name, provider in list(router.providers.items()):
        router.providers[name] = RateLimitedProvider(provider, TokenBucket(rate_per_s))
    return router
