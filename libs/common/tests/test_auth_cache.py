"""The verified-token cache never outlives the token or its signing key."""

import asyncio
import time
import uuid

import jwt
import pytest
from common.auth import JWKSCache, TokenVerifier
from common.errors import Unauthorized
from common.settings import BaseServiceSettings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def make_verifier() -> tuple[TokenVerifier, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    jwks = JWKSCache("http://127.0.0.1:9/unreachable.json", min_refresh_s=3600)
    jwks._keys = {"k1": key.public_key()}
    jwks._fetched_at = time.monotonic()
    return TokenVerifier(BaseServiceSettings(service_name="t"), jwks, cache_ttl_s=60), key


def token(key: Ed25519PrivateKey, exp_in: int = 600) -> str:
    now = int(time.time())
    claims = {"iss": "switchboard-auth", "aud": "switchboard", "sub": "u1", "tid": "t1", "roles": ["OWNER"],
              "iat": now, "exp": now + exp_in, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1", "typ": "at+jwt"})


async def test_a_cached_token_is_refused_once_its_key_leaves_the_jwks():
    verifier, key = make_verifier()
    t = token(key)
    assert (await verifier.verify(t)).user_id == "u1"
    assert (await verifier.verify(t)).user_id == "u1"  # served from the cache
    verifier.jwks._keys = {}  # the key was retired and the JWKS no longer lists it
    with pytest.raises(Unauthorized):
        await verifier.verify(t)


async def test_a_cached_token_still_expires():
    verifier, key = make_verifier()
    t = token(key, exp_in=-4)  # expired, but within the verifier's 5 s leeway
    await verifier.verify(t)
    await asyncio.sleep(1.5)  # now past the leeway too: the cache must not keep it alive
    with pytest.raises(Unauthorized):
        await verifier.verify(t)
