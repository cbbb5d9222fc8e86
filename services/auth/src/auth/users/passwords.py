"""argon2id hashing; verification of a missing account burns the same time as a real one."""

from __future__ import annotations

import asyncio
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from auth.settings import AuthSettings


@lru_cache(maxsize=4)
def _hasher(memory_kib: int, time_cost: int, parallelism: int) -> tuple[PasswordHasher, str]:
    hasher = PasswordHasher(memory_cost=memory_kib, time_cost=time_cost, parallelism=parallelism)
    return hasher, hasher.hash("switchboard-dummy-password")


def hasher_for(settings: AuthSettings) -> tuple[PasswordHasher, str]:
    return _hasher(settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism)


async def hash_password(settings: AuthSettings, password: str) -> str:
    hasher, _ = hasher_for(settings)
    # argon2 is CPU-bound for tens of ms: keep it off the event loop.
    return await asyncio.to_thread(hasher.hash, password)


async def verify_password(settings: AuthSettings, stored: str | None, password: str) -> bool:
    hasher, dummy = hasher_for(settings)

    def check() -> bool:
        try:
            return hasher.verify(stored or dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)
