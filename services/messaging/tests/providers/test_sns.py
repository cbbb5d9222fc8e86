"""The SNS adapter against a real moto server on 127.0.0.1 (moto records every SMS published)."""

from __future__ import annotations

import uuid

import pytest
from messaging.providers import ProviderRejected, ProviderUnavailable
from messaging.providers.sns import SnsProvider


def sns(endpoint: str, **kwargs) -> SnsProvider:
    return SnsProvider(
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        timeout_s=5,
        **kwargs,
    )


@pytest.fixture
async def provider(moto):
    p = sns(moto.url, default_sender_id="SWITCHBD")
    yield p
    await p.aclose()


async def recorded(moto, message_id: str) -> dict:
    [sms] = [m for m in await moto.published_sms() if m["message_id"] == message_id]
    return sms


async def test_a_published_sms_reaches_sns(provider, moto, new_phone):
    phone = new_phone()
    result = await provider.send(phone, "Your code is 771204", str(uuid.uuid4()))
    assert result.accepted and result.status == "sent"
    sms = await recorded(moto, result.provider_message_id)
    assert (sms["phone_number"], sms["message"]) == (phone, "Your code is 771204")


async def test_unicode_and_an_explicit_sender_and_type(moto, new_phone):
    p = sns(moto.url, sms_type="Promotional")
    text = "Скидка 20% 🎉"
    result = await p.send(new_phone(), text, str(uuid.uuid4()), sender="ACME")
    assert (await recorded(moto, result.provider_message_id))["message"] == text
    await p.aclose()


async def test_a_number_that_is_not_e164_is_rejected(provider):
    with pytest.raises(ProviderRejected) as caught:
        await provider.send("+0155-NOT-A-NUMBER", "hi", str(uuid.uuid4()))
    assert caught.value.code == "InvalidParameter"


async def test_a_text_longer_than_sns_takes_is_rejected(provider, new_phone):
    with pytest.raises(ProviderRejected):
        await provider.send(new_phone(), "a" * 1601, str(uuid.uuid4()))


async def test_an_unreachable_endpoint_is_unavailable(nowhere, new_phone):
    p = sns(nowhere)
    with pytest.raises(ProviderUnavailable) as caught:
        await p.send(new_phone(), "hi", str(uuid.uuid4()))
    assert caught.value.maybe_sent is False
    await p.aclose()


def test_sns_has_no_delivery_webhook(moto):
    p = sns(moto.url)
    assert p.has_delivery_reports is False
    assert p.verify_webhook("http://127.0.0.1:8080/api/v1/webhooks/sms/sns", {"X-Signature": "x"}, b"{}") is False


def test_the_sms_type_is_checked():
    with pytest.raises(ValueError):
        SnsProvider(sms_type="Urgent", endpoint_url="http://127.0.0.1:1")
