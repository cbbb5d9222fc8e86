"""JWT verification against the auth service's JWKS, and the dependencies that expose the caller.

Access tokens are EdDSA-signed JWTs with header `typ: at+jwt` and a `kid` naming a key in the
JWKS. The algorithm is pinned, `iss`/`aud`/`exp`/`iat`/`jti`/`sub` are required, and every
failure is a 401 in the error envelope, never a 500.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from common.errors import Forbidden, Unauthorized
from common.http import http_client
from common.settings import BaseServiceSettings

ALGORITHM = "EdDSA"
ACCESS_TYP = "at+jwt"
KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    roles: tuple[str, ...] = ()
    is_platform_admin: bool = False
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    def has_role(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)

    @property
    def tenant_uuid(self) -> uuid.UUID:
        """The tenant id as a UUID (the services' tables key tenants by UUID)."""
        return uuid.UUID(self.tenant_id)

    @property
    def user_uuid(self) -> uuid.UUID:
        return uuid.UUID(self.user_id)


class JWKSCache:
    """Public keys from the JWKS URL, cached; an unknown `kid` triggers at most one refetch per
    `min_refresh_s` (so forged kids cannot make us hammer the auth service)."""

    def __init__(
        self, url: str, *, ttl_s: float = 300.0, min_refresh_s: float = 1.0, timeout_s: float = 3.0
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Any:
        now = time.monotonic()
        if kid in self._keys and now - self._fetched_at < self.ttl_s:
            return self._keys[kid]
        async with self._lock:
            now = time.monotonic()
            stale = now - self._fetched_at >= self.ttl_s
            unknown_and_allowed = kid not in self._keys and now - self._fetched_at >= self.min_refresh_s
            if stale or unknown_and_allowed:
                await self._refresh()
        if kid not in self._keys:
            raise Unauthorized("Unknown signing key", code="INVALID_TOKEN")
        return self._keys[kid]

    def publishes(self, kid: str) -> bool:
        """Whether `kid` is among the keys we hold (a key dropped from the JWKS ends its tokens)."""
        return kid in self._keys

    async def _refresh(self) -> None:
        try:
            async with http_client(timeout=self.timeout_s) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                jwks = jwt.PyJWKSet.from_dict(response.json())
        except Exception as exc:  # noqa: BLE001
            if self._keys:
                # Keep serving the keys we have while auth is unreachable, and try again in
                # `min_refresh_s * 30` rather than on every request.
                self._fetched_at = time.monotonic() - self.ttl_s + self.min_refresh_s * 30
                return
            raise Unauthorized("Cannot verify tokens right now", code="JWKS_UNAVAILABLE") from exc
        keys = {}
        for k in jwks.keys:
            if k.key_id and KID_RE.match(k.key_id) and k.algorithm_name == ALGORITHM:
                keys[k.key_id] = k.key
        self._keys = keys
        self._fetched_at = time.monotonic()


class TokenVerifier:
    """Verifies access tokens; a token verified once is remembered (bounded LRU) until the
    earlier of its expiry and `cache_ttl_s`, as long as its signing key is still published:
    the Ed25519 check costs more than a whole bare request."""

    def __init__(
        self,
        settings: BaseServiceSettings,
        jwks: JWKSCache | None = None,
        *,
        cache_size: int = 10_000,
        cache_ttl_s: float = 60.0,
    ) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.jwks = jwks or JWKSCache(settings.jwks_url)
        self.cache_size = cache_size
        self.cache_ttl_s = cache_ttl_s
        self._verified: OrderedDict[str, tuple[float, str, Principal]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            valid_until, kid, principal = hit
            if time.time() < valid_until and self.jwks.publishes(kid):
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, kid = await self._verify(token)
        exp = float(principal.claims.get("exp", 0))
        self._verified[token] = (min(exp, time.time() + self.cache_ttl_s), kid, principal)
        if len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("Malformed token", code="INVALID_TOKEN") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("Token algorithm not accepted", code="INVALID_TOKEN")
        if header.get("typ") != ACCESS_TYP:
            raise Unauthorized("Not an access token", code="INVALID_TOKEN")
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID_RE.match(kid):
            raise Unauthorized("Bad key id", code="INVALID_TOKEN")
        key = await self.jwks.key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Token expired", code="TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid token", code="INVALID_TOKEN") from exc
        tenant = claims.get("tid")
        roles = claims.get("roles") or []
        if not isinstance(tenant, str) or not isinstance(roles, list):
            raise Unauthorized("Invalid token", code="INVALID_TOKEN")
        principal = Principal(
            user_id=str(claims["sub"]),
            tenant_id=tenant,
            roles=tuple(str(r) for r in roles),
            is_platform_admin=bool(claims.get("adm", False)),
            claims=claims,
        )
        return principal, kid


def _bearer(request: Request) -> str:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 8192:
        raise Unauthorized("Missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


async def get_principal(request: Request) -> Principal:
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(_bearer(request))


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: str):
    """Dependency: the caller holds one of `roles` in their tenant (platform admins pass)."""

    async def _dep(principal: CurrentPrincipal) -> Principal:
        if principal.is_platform_admin or principal.has_role(*roles):
            return principal
        raise Forbidden("Your role does not allow this")

    return Depends(_dep)


async def require_platform_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_platform_admin:
        raise Forbidden("Platform administrators only")
    return principal


PlatformAdmin = Annotated[Principal, Depends(require_platform_admin)]
