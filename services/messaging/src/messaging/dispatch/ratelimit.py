"""A token bucket per provider, so one worker never calls a provider faster than
`sms_provider_rate_per_s` (providers answer 429 above their contracted rate, and a burst of
429s would open the breaker and push traffic to the next provider)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from messaging.providers.base import SendResult, SmsProvider
from messaging.providers.routing import Router


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. Waiters are served in arrival order."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = rate
        # A tenth of a second's worth by default: smooth enough for a provider, and a lone OTP
        # never waits.
        self.burst = max(1.0, burst if burst is not None else rate / 10)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


class RateLimitedProvider(SmsProvider):
    """A provider whose sends first take a token from its bucket; everything else passes through."""

    def __init__(self, inner: SmsProvider, bucket: TokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket
        self.name = inner.name
        self.has_delivery_reports = inner.has_delivery_reports

    async def send(self, to: str, text: str, client_ref: str, sender: str | None = None) -> SendResult:
        await self.bucket.acquire()
        return await self.inner.send(to, text, client_ref, sender)

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
