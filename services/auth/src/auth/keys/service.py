"""Signing keys live in the auth schema; the newest unretired key signs, all unretired verify."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import jwt
from common.auth import ACCESS_TYP, ALGORITHM
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import SigningKey
from auth.settings import AuthSettings


def _new_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = secrets.token_urlsafe(12)
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return SigningKey(kid=kid, private_pem=pem, public_jwk=jwk)


async def ensure_signing_key(session: AsyncSession) -> None:
    """Create the first key once, even when several API processes start together."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('auth.signing_keys'))"))
    existing = await session.scalar(select(SigningKey.kid).where(SigningKey.retired_at.is_(None)))
    if existing is None:
        session.add(_new_key())


async def active_key(session: AsyncSession) -> SigningKey:
    key = await session.scalar(
        select(SigningKey)
        .where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc())
        .limit(1)
    )
    if key is None:
        raise RuntimeError("no signing key: the API startup creates one")
    return key


async def jwks(session: AsyncSession) -> dict[str, Any]:
    rows = await session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None)))
    return {"keys": [row.public_jwk for row in rows]}


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
