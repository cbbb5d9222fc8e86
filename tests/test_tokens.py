"""Forged, expired and misdirected tokens are refused with 401 by every service, never 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.support import superuser

PROTECTED = "/api/v1/users/credits"  # billing: a downstream service, not auth itself
SERVICES = ["auth", "messaging", "chat", "media", "billing", "provider-sync"]


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
async def signing_key():
    async with superuser() as conn:
        row = await conn.fetchrow(
            "SELECT kid, private_pem, public_jwk FROM auth.signing_keys WHERE retired_at IS NULL "
            "ORDER BY created_at DESC LIMIT 1"
        )
    private = serialization.load_pem_private_key(row["private_pem"].encode(), password=None)
    return row["kid"], private, json.loads(row["public_jwk"]) if isinstance(row["public_jwk"], str) else row["public_jwk"]


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": "switchboard-auth", "aud": "switchboard", "sub": str(uuid.uuid4()),
        "tid": str(uuid.uuid4()), "roles": ["OWNER"], "adm": False,
        "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return base


def hs256_with(secret: bytes, kid: str) -> str:
    """The classic confusion attack: HMAC over the real signing input, keyed by the public key."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}.{b64(claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def forged_tokens(kid, private, public_jwk) -> dict[str, str]:  # noqa: ANN001
    sign = lambda c, **h: jwt.encode(c, private, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt", **h})  # noqa: E731
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "garbage": "not.a.token",
        "alg none": f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{b64(claims())}.",
        "HS256 keyed with the public key": hs256_with(public_pem, kid),
        "expired": sign(claims(iat=int(time.time()) - 3600, exp=int(time.time()) - 1800)),
        "wrong audience": sign(claims(aud="someone-else")),
        "wrong issuer": sign(claims(iss="evil")),
        "no jti": sign({k: v for k, v in claims().items() if k != "jti"}),
        "path-like kid": jwt.encode(claims(), private, algorithm="EdDSA",
                                    headers={"kid": "../../etc/passwd", "typ": "at+jwt"}),
        "unknown kid": jwt.encode(claims(), private, algorithm="EdDSA",
                                  headers={"kid": "nosuchkey123", "typ": "at+jwt"}),
        "refresh token type": sign(claims(), typ="rt+jwt"),
        "tampered payload": (lambda t: t.split(".")[0] + "." + b64(claims(adm=True)) + "." + t.split(".")[2])(sign(claims())),
    }


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_refuses_every_forged_or_stale_token_with_a_401_envelope(gateway, signing_key, service):
    for name, token in forged_tokens(*signing_key).items():
        r = await gateway.get(f"/_svc/{service}/whoami", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401, (service, name, r.status_code, r.text)
        body = r.json()
        assert body["success"] is False and body["code"] in {"INVALID_TOKEN", "TOKEN_EXPIRED"}, (name, body)


async def test_a_product_endpoint_refuses_forged_tokens_too(gateway, signing_key):
    for name, token in forged_tokens(*signing_key).items():
        r = await gateway.get(PROTECTED, headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.status_code, r.text)


async def test_missing_token_is_a_401_with_the_bearer_challenge(gateway):
    r = await gateway.get(PROTECTED)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_a_genuine_token_for_a_tenant_without_account_is_a_404_not_someone_elses_account(
    gateway, signing_key
):
    kid, private, _ = signing_key
    token = jwt.encode(claims(), private, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})
    r = await gateway.get(PROTECTED, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 404 and r.json()["code"] == "ACCOUNT_NOT_FOUND"
