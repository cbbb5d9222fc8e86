"""Short codes and sealed secrets.

Codes (auth's OTPs, messaging's number-verification codes) are six random digits, kept only as
an HMAC under a pepper the service holds: six digits hashed without a secret fall to a million
guesses offline. The salt is the challenge's id, so equal codes hash apart.

Secrets that travel inside events are sealed: an OTP code goes from auth to messaging through the
outbox table and a Kafka topic, both kept for days and readable by more people and tools than
either service. Sealed with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key
only the two services hold, the code is useless to anyone who reads the topic or the outbox.

`SealSettings` is the mixin of the services that seal or open: `SB_OTP_SEAL_KEYS`, a JSON list
of Fernet keys; the first seals, every one opens (add the new key first, retire the old one
once no event sealed with it can still be waiting). Production refuses the local key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, field_validator

# The local stack's key (make dev, tests): public, so production refuses it.
LOCAL_SEAL_KEY = base64.urlsafe_b64encode(b"switchboard-local-otp-seal-key!!").decode()


def new_code() -> str:
    """Six random digits."""
    return f"{secrets.randbelow(1_000_000):06d}"


def code_hash(pepper: str, salt: object, code: str) -> str:
    """The stored form of `code` (64 hex characters): HMAC-SHA256 of `salt:code` under `pepper`."""
    return hmac.new(pepper.encode(), f"{salt}:{code}".encode(), hashlib.sha256).hexdigest()


def code_matches(pepper: str, salt: object, code: str, stored: str) -> bool:
    """Whether `code` is the one stored as `stored`, in constant time."""
    return hmac.compare_digest(code_hash(pepper, salt, code), stored)


class Unsealable(ValueError):
    """A sealed value that no key opens (tampered, or sealed under a retired key)."""


class SealSettings(BaseModel):
    otp_seal_keys: list[str] = [LOCAL_SEAL_KEY]

    @field_validator("otp_seal_keys")
    @classmethod
    def _usable(cls, keys: list[str]) -> list[str]:
        if not keys:
            raise ValueError("otp_seal_keys needs at least one key")
        for key in keys:
            Fernet(key)  # raises on a malformed key: fail at start, not at the first OTP
        return keys

    def check_production_seal(self) -> None:
        if LOCAL_SEAL_KEY in self.otp_seal_keys:
            raise ValueError("production settings keep the local otp_seal_keys: set SB_OTP_SEAL_KEYS")


def _fernet(keys: list[str]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def seal(keys: list[str], secret: str) -> str:
    return _fernet(keys).encrypt(secret.encode()).decode()


def unseal(keys: list[str], sealed: str) -> str:
    try:
        return _fernet(keys).decrypt(sealed.encode()).decode()
    except InvalidToken as exc:
        raise Unsealable("no key opens this sealed value") from exc
