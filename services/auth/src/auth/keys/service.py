"""Signing keys live in the auth schema. The newest active key signs; every key not yet past its
retirement is published, so rotating keys logs nobody out: tokens signed by the previous key
keep verifying until they expire (the grace covers the access-token lifetime)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from common.auth import ACCESS_TYP, ALGORITHM
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from auth.keys.repository import KeyRepository
from auth.models import SigningKey
from auth.settings import AuthSettings


def _new_key(now: datetime) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = secrets.token_urlsafe(12)
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return SigningKey(kid=kid, private_pem=pem, public_jwk=jwk, active_from=now)


async def ensure_signing_key(session: AsyncSession) -> None:
    """Create the first key once, even when several API processes start together."""
    repo = KeyRepository(session)
    await repo.lock()
    now = datetime.now(UTC)
    if await repo.signer(now) is None:
        await repo.add(_new_key(now))


async def rotate(session: AsyncSession, settings: AuthSettings) -> SigningKey:
    repo = KeyRepository(session)
    await repo.lock()
    now = datetime.now(UTC)
    await repo.retire_active(now + timedelta(seconds=settings.key_retire_grace_s))
    key = _new_key(now)
    await repo.add(key)
    return key


async def active_key(session: AsyncSession) -> SigningKey:
    key = await KeyRepository(session).signer(datetime.now(UTC))
    if key is None:
        raise RuntimeError("no signing key: the API startup creates one")
    return key


async def jwks(session: AsyncSession) -> dict[str, Any]:
    keys = await KeyRepository(session).published(datetime.now(UTC))
    return {"keys": [k.public_jwk for k in keys]}


def sign_access_token(
    key: SigningKey,
    settings: AuthSettings,
    *,
    user_id: str,
    tenant_id: str,
    roles: list[str],
    is_platform_admin: bool,
) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user_id,
        "tid": tenant_id,
        "roles": roles,
        "adm": is_platform_admin,
        "iat": now,
        "exp": now + settings.access_token_ttl_s,
        "jti": uuid.uuid4().hex,
    }
    private = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": ACCESS_TYP})
