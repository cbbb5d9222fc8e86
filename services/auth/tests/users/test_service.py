"""Registration and login against the real auth schema."""

import uuid

import jwt
import pytest
import redis.asyncio as aioredis
from auth.keys.service import ensure_signing_key
from auth.settings import AuthSettings
from auth.users import service
from auth.users.schemas import LoginRequest, RegisterRequest
from common.errors import Conflict, Unauthorized
from common.ratelimit import RateLimiter
from sqlalchemy import text

from tests.support import rollback_session

# Cheap argon2 here only: the running service uses the real parameters.
SETTINGS = AuthSettings(argon2_memory_kib=1024, argon2_time_cost=1)


IP = "203.0.113.9"


def limiter() -> RateLimiter:
    return RateLimiter(aioredis.from_url(SETTINGS.redis_url), f"test-{uuid.uuid4().hex}")


def new_email() -> str:
    return f"svc-{uuid.uuid4().hex[:10]}@example.com"


async def test_register_creates_an_owner_and_one_registered_event():
    async with rollback_session(SETTINGS) as session:
        await ensure_signing_key(session)
        email = new_email()
        tokens = await service.register(
            session, SETTINGS, limiter(), IP, RegisterRequest(email=email, password="pw-long-enough", name="Ann", tenant_name="Acme")
        )
        assert tokens.user.role == "OWNER" and tokens.user.email == email
        claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
        assert claims["tid"] == tokens.user.tenant_id and claims["roles"] == ["OWNER"]
        rows = (
            await session.execute(
                text("SELECT envelope FROM outbox WHERE event_type = 'auth.user.registered.v1' AND key = :k"),
                {"k": tokens.user.id},
            )
        ).scalars().all()
        assert len(rows) == 1
        data = rows[0]["data"]
        assert data["tenantId"] == tokens.user.tenant_id and data["personalTenant"] is False
        assert "password" not in str(rows[0]).lower()


async def test_the_same_email_registers_once_whatever_its_case():
    async with rollback_session(SETTINGS) as session:
        await ensure_signing_key(session)
        email = new_email()
        await service.register(session, SETTINGS, limiter(), IP, RegisterRequest(email=email, password="pw-long-enough", name="A"))
        with pytest.raises(Conflict):
            await service.register(
                session, SETTINGS, limiter(), IP, RegisterRequest(email=email.upper(), password="other-long-pw", name="B")
            )


async def test_login_refuses_a_wrong_password_and_an_unknown_email_alike():
    limits = limiter()
    async with rollback_session(SETTINGS) as session:
        await ensure_signing_key(session)
        email = new_email()
        await service.register(session, SETTINGS, limiter(), IP, RegisterRequest(email=email, password="pw-long-enough", name="A"))
        ok = await service.login(session, SETTINGS, limits, IP, LoginRequest(email=email, password="pw-long-enough"))
        assert ok.user.email == email
        for bad in (LoginRequest(email=email, password="wrong-password"),
                    LoginRequest(email=new_email(), password="pw-long-enough")):
            with pytest.raises(Unauthorized) as err:
                await service.login(session, SETTINGS, limits, IP, bad)
            assert err.value.code == "INVALID_CREDENTIALS"
