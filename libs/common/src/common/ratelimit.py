"""Rate limits in Redis: fixed windows, atomic, and closed when Redis is away.

Limits guard security (login guessing, SMS pumping), so an unreachable Redis refuses the request
with 503 rather than letting it through. Counters that must survive a Redis restart (OTP attempt
counts) do not live here: they are in Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request

from common.errors import RateLimited, ServiceUnavailable

# INCR, set the window on the first hit, answer (count, ttl) in one round trip.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    window_s: int


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._hit = redis.register_script(_HIT)

    def _key(self, limit: Limit, subject: str) -> str:
        return f"rl:{self.prefix}:{limit.name}:{subject}"

    async def hit(self, limit: Limit, subject: str) -> None:
        """Count one event; raise 429 with Retry-After once the window's limit is passed."""
        try:
            count, ttl = await self._hit(keys=[self._key(limit, subject)], args=[limit.window_s])
        except aioredis.RedisError as exc:
            raise ServiceUnavailable("Rate limiter unavailable, try again shortly") from exc
        if int(count) > limit.limit:
            raise _too_many(int(ttl))

    async def undo(self, limit: Limit, subject: str) -> None:
        """Give back one counted event (an attempt that turned out to be legitimate)."""
        try:
            await self.redis.decr(self._key(limit, subject))
        except aioredis.RedisError as exc:
            raise ServiceUnavailable("Rate limiter unavailable, try again shortly") from exc

    async def reset(self, limit: Limit, subject: str) -> None:
        try:
            await self.redis.delete(self._key(limit, subject))
        except aioredis.RedisError as exc:
            raise ServiceUnavailable("Rate limiter unavailable, try again shortly") from exc


def _too_many(retry_after: int) -> RateLimited:
    retry_after = max(retry_after, 1)
    return RateLimited(
        f"Too many attempts; retry in {retry_after} s",
        details={"retryAfter": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def client_ip(request: Request) -> str:
    """The caller's address: the gateway's X-Real-IP (services listen on loopback only)."""
    real = request.headers.get("x-real-ip", "")
    if real and len(real) <= 64:
        return real
    return request.client.host if request.client else "unknown"
