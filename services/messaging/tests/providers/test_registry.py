"""Providers and router built from MessagingSettings, including against the local stack's own
simulator (the one `make dev` runs on 127.0.0.1:8430)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from messaging.providers.http_gateway import HttpGatewayProvider
from messaging.providers.registry import build_router, webhook_url
from messaging.providers.sns import SnsProvider
from messaging.settings import MessagingSettings
from pydantic import ValidationError


def test_the_router_holds_every_provider_the_routes_name(nowhere):
    settings = MessagingSettings(
        sms_routes={"US": ["gateway", "sns"], "*": ["simulator"]},
        sms_gateway_base_url=nowhere,
        sms_gateway_api_key="k",
        sms_sns_endpoint_url=nowhere,
        sms_breaker_failures=7,
    )
    router = build_router(settings)
    assert set(router.providers) == {"gateway", "sns", "simulator"}
    assert isinstance(router.providers["gateway"], HttpGatewayProvider)
    assert isinstance(router.providers["sns"], SnsProvider)
    assert router.candidates("+14155550123") == ("US", ["gateway", "sns"])
    assert router.candidates("+4915112345678") == ("DE", ["simulator"])
    assert router.breakers["sns"].failure_threshold == 7


def test_the_webhook_url_is_the_public_one_the_signature_covers():
    settings = MessagingSettings(sms_webhook_base_url="https://api.example.com/api/v1/webhooks/sms/")
    assert webhook_url(settings, "gateway") == "https://api.example.com/api/v1/webhooks/sms/gateway"
    assert webhook_url(settings, "gateway", "a=1") == "https://api.example.com/api/v1/webhooks/sms/gateway?a=1"


PROD_SEAL_KEY = "q0pm4S7mT3XJfQ2y0x1w8Lr6QfH1m5oC9dY4iN2bKzE="


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sms_routes": {"*": ["twilio"]}}, "unknown providers"),
        ({"sms_routes": {"*": ["gateway"]}}, "no base URL"),
        ({"environment": "production", "database_url": "postgresql+asyncpg://m:s3cret@db/x"}, "local otp_seal_keys"),
        (
            {"environment": "production", "database_url": "postgresql+asyncpg://m:s3cret@db/x",
             "otp_seal_keys": [PROD_SEAL_KEY]},
            "placeholder sms_number_code_pepper",
        ),
        (
            {
                "environment": "production",
                "database_url": "postgresql+asyncpg://m:s3cret@db/x",
                "sms_number_code_pepper": "9b2f0e7c1d4a",
                "otp_seal_keys": [PROD_SEAL_KEY],
            },
            "simulator",
        ),
        (
            {
                "environment": "production",
                "database_url": "postgresql+asyncpg://m:s3cret@db/x",
                "sms_number_code_pepper": "9b2f0e7c1d4a",
                "otp_seal_keys": [PROD_SEAL_KEY],
                "sms_routes": {"*": ["gateway"]},
                "sms_gateway_base_url": "https://sms.example.com",
                "sms_gateway_api_key": "k",
            },
            "no webhook secret",
        ),
    ],
)
def test_settings_refuse_routes_that_cannot_work(overrides, message):
    with pytest.raises(ValidationError, match=message):
        MessagingSettings(**overrides)


async def test_the_local_stacks_simulator_delivers_with_default_settings():
    # The defaults point at the simulator that scripts/devstack.py runs (make dev).
    settings = MessagingSettings(sms_routes={"*": ["simulator"]})
    router = build_router(settings)
    phone = "+14155557788"
    ref = str(uuid.uuid4())
    sent = await router.send(phone, "Your code is 600600", ref)
    assert sent.provider == "simulator"
    async with httpx.AsyncClient(base_url=settings.sms_simulator_base_url, timeout=5) as client:
        for _ in range(100):
            inbox = (await client.get(f"/_sim/inbox/{phone}")).json()
            if any(m["clientRef"] == ref for m in inbox):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"not delivered to {phone}: {inbox}")
    await router.aclose()
