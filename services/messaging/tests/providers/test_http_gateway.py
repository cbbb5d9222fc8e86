"""The HTTP gateway adapter against the real simulator process (the same wire format a real
gateway speaks): sending, the inbox, signed delivery reports, and the failure rules."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from messaging.providers import (
    DeliveryStatus,
    InvalidDeliveryReport,
    ProviderRejected,
    ProviderUnavailable,
    webhook_signature,
)
from messaging.providers.http_gateway import HttpGatewayProvider


@pytest.fixture
async def provider(sim_a):
    p = sim_a.provider()
    yield p
    await p.aclose()


async def test_a_message_is_accepted_and_lands_in_the_phones_inbox(provider, sim_a, new_phone):
    phone, ref = new_phone(), str(uuid.uuid4())
    result = await provider.send(phone, "Your Switchboard code is 482913", ref, "SWITCHBD")
    assert result.accepted
    assert result.provider_message_id.startswith("sim_")
    [received] = await sim_a.wait_inbox(phone)
    assert received["text"] == "Your Switchboard code is 482913"
    assert received["clientRef"] == ref
    assert received["from"] == "SWITCHBD"
    assert received["id"] == result.provider_message_id


async def test_unicode_text_arrives_unchanged(provider, sim_a, new_phone):
    phone = new_phone()
    text = "Привет 👋 — ваш код: 1234 €"
    await provider.send(phone, text, str(uuid.uuid4()))
    [received] = await sim_a.wait_inbox(phone)
    assert received["text"] == text


async def test_signed_delivery_reports_sent_then_delivered_verify(provider, sim_a, receiver, new_phone):
    ref = str(uuid.uuid4())
    result = await provider.send(new_phone(), "hello", ref)
    sent, delivered = await receiver.wait_for(result.provider_message_id, 2)
    url = receiver.url("sim-a")  # the URL the simulator called, as our gateway would pass it on

    for request in (sent, delivered):
        assert provider.verify_webhook(url, request.headers, request.body)
    reports = [provider.parse_delivery_report(r.body, r.headers)[0] for r in (sent, delivered)]
    assert [r.status for r in reports] == [DeliveryStatus.SENT, DeliveryStatus.DELIVERED]
    assert {r.client_ref for r in reports} == {ref}
    assert {r.provider_message_id for r in reports} == {result.provider_message_id}
    assert reports[1].error is None

    # Tampered body, another URL, a missing or wrong signature, another secret: all refused.
    tampered = delivered.body.replace(b'"delivered"', b'"failed"')
    assert tampered != delivered.body
    assert not provider.verify_webhook(url, delivered.headers, tampered)
    assert not provider.verify_webhook(url + "?x=1", delivered.headers, delivered.body)
    assert not provider.verify_webhook(receiver.url("sim-b"), delivered.headers, delivered.body)
    no_signature = {k: v for k, v in delivered.headers.items() if k.lower() != "x-signature"}
    assert not provider.verify_webhook(url, no_signature, delivered.body)
    forged = {**no_signature, "X-Signature": webhook_signature("guessed", url, tampered)}
    assert not provider.verify_webhook(url, forged, tampered)
    other = sim_a.provider(secrets=("another-secret",))
    assert not other.verify_webhook(url, delivered.headers, delivered.body)
    # A rotated secret list still accepts the old one.
    rotated = sim_a.provider(secrets=("new-secret", sim_a.webhook_secret))
    assert rotated.verify_webhook(url, delivered.headers, delivered.body)
    await other.aclose()
    await rotated.aclose()


async def test_an_undeliverable_number_reports_failed_and_stays_out_of_the_inbox(provider, sim_a, receiver):
    phone = "+14155550004"
    result = await provider.send(phone, "hello", str(uuid.uuid4()))
    assert result.accepted
    sent, failed = await receiver.wait_for(result.provider_message_id, 2)
    assert provider.verify_webhook(receiver.url("sim-a"), failed.headers, failed.body)
    [report] = provider.parse_delivery_report(failed.body)
    assert (report.status, report.error) == (DeliveryStatus.FAILED, "UNDELIVERABLE")
    assert await sim_a.inbox(phone) == []


async def test_a_permanently_refused_number_raises_rejected(provider, sim_a):
    with pytest.raises(ProviderRejected) as caught:
        await provider.send("+14155550001", "hello", str(uuid.uuid4()))
    assert caught.value.code == "INVALID_NUMBER"
    with pytest.raises(ProviderRejected):
        await provider.send("12345", "hello", str(uuid.uuid4()))
    assert (await sim_a.stats())["rejected"] == 2


async def test_an_outage_raises_unavailable(provider, sim_a, new_phone):
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.send("+14155550002", "hello", str(uuid.uuid4()))  # the 0002 rule
    assert (caught.value.code, caught.value.maybe_sent) == ("OUTAGE", False)

    await sim_a.outage(True)
    with pytest.raises(ProviderUnavailable):
        await provider.send(new_phone(), "hello", str(uuid.uuid4()))
    await sim_a.outage(False)
    assert (await provider.send(new_phone(), "hello", str(uuid.uuid4()))).accepted


async def test_throttling_raises_unavailable_with_retry_after(provider):
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.send("+14155550005", "hello", str(uuid.uuid4()))
    assert (caught.value.code, caught.value.retry_after_s) == ("THROTTLED", 1.0)


async def test_a_wrong_api_key_is_unavailable_not_a_rejection_of_the_message(sim_a, new_phone):
    # The gateway refuses us, not the message: another provider may take it.
    bad = sim_a.provider(api_key="wrong")
    with pytest.raises(ProviderUnavailable) as caught:
        await bad.send(new_phone(), "hello", str(uuid.uuid4()))
    assert caught.value.code == "UNAUTHORIZED"
    await bad.aclose()


async def test_an_unreachable_gateway_is_unavailable_and_nothing_was_sent(nowhere, new_phone):
    p = HttpGatewayProvider("simulator", base_url=nowhere, api_key="k")
    with pytest.raises(ProviderUnavailable) as caught:
        await p.send(new_phone(), "hello", str(uuid.uuid4()))
    assert (caught.value.code, caught.value.maybe_sent) == ("UNREACHABLE", False)
    await p.aclose()


async def test_the_same_client_ref_sends_once(provider, sim_a, new_phone):
    phone, ref = new_phone(), str(uuid.uuid4())
    first = await provider.send(phone, "once", ref)
    again = await provider.send(phone, "once", ref)
    assert again.provider_message_id == first.provider_message_id
    await sim_a.wait_inbox(phone)
    await asyncio.sleep(0.3)
    assert len(await sim_a.inbox(phone)) == 1
    assert (await sim_a.stats())["duplicates"] == 1


async def test_a_runtime_delay_rule_holds_the_delivery(provider, sim_a, receiver, new_phone):
    phone = new_phone()
    await sim_a.rule(phone[-4:], "delay", delaySeconds=1.0)
    result = await provider.send(phone, "later", str(uuid.uuid4()))
    [sent] = await receiver.wait_for(result.provider_message_id, 1)
    assert json.loads(sent.body)["status"] == "sent"
    assert await sim_a.inbox(phone) == []
    await sim_a.wait_inbox(phone, timeout=5)
    await receiver.wait_for(result.provider_message_id, 2)


async def test_the_message_log_lists_every_message_with_its_reports(provider, sim_a, receiver, new_phone):
    start = (await sim_a.messages())["next"]
    result = await provider.send(new_phone(), "logged", str(uuid.uuid4()))
    await receiver.wait_for(result.provider_message_id, 2)
    await asyncio.sleep(0.1)
    page = await sim_a.messages(since=start)
    [message] = page["messages"]
    assert message["id"] == result.provider_message_id
    assert message["status"] == "delivered"
    assert [(r["status"], r["ok"]) for r in message["reports"]] == [("sent", True), ("delivered", True)]
    assert (await sim_a.messages(since=page["next"]))["messages"] == []


async def test_reports_are_retried_while_the_endpoint_answers_404(provider, sim_a, receiver, new_phone):
    # The webhook endpoint does not exist yet on the gateway: the simulator must cope.
    receiver.status = 404
    try:
        result = await provider.send(new_phone(), "retry me", str(uuid.uuid4()))
        await receiver.wait_for(result.provider_message_id, 2, timeout=5)  # sent, sent again
    finally:
        receiver.status = 200
    # Once it answers 200, the pending reports go through, in order.
    found = await receiver.wait_for(result.provider_message_id, 4, timeout=15)
    statuses = [json.loads(r.body)["status"] for r in found]
    assert statuses[-1] == "delivered"
    assert statuses.index("delivered") > statuses.index("sent")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"clientRef": "x", "status": "delivered"}',
        b'{"id": "m1", "status": "read"}',
        b'{"id": "m1", "status": "sent", "clientRef": 5}',
        b'["nope"]',
    ],
)
def test_malformed_reports_are_refused(body):
    p = HttpGatewayProvider("simulator", base_url="http://127.0.0.1:1", api_key="k", webhook_secrets=("s",))
    with pytest.raises(InvalidDeliveryReport):
        p.parse_delivery_report(body)


def test_a_batch_of_reports_parses_and_provider_words_map_to_ours():
    p = HttpGatewayProvider("simulator", base_url="http://127.0.0.1:1", api_key="k")
    body = json.dumps(
        [
            {"id": "a", "clientRef": "r1", "status": "DELIVERED"},
            {"id": "b", "status": "expired", "error": "TTL"},
            {"id": "c", "clientRef": "", "status": "undelivered", "error": {"code": 30003}},
        ]
    ).encode()
    reports = p.parse_delivery_report(body)
    assert [(r.provider_message_id, r.client_ref, r.status) for r in reports] == [
        ("a", "r1", DeliveryStatus.DELIVERED),
        ("b", None, DeliveryStatus.FAILED),
        ("c", None, DeliveryStatus.FAILED),
    ]
    assert reports[1].error == "TTL" and reports[2].error == '{"code": 30003}'
    # No secret configured: nothing verifies.
    assert not p.verify_webhook("http://x", {"X-Signature": webhook_signature("", "http://x", body)}, body)
