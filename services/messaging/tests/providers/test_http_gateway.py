"""The HTTP gateway adapter against the real simulator process (the same wire format a real
gateway speaks): sending, the inbox, signed delivery reports, and the failure rules."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from messaging.providers import (
    DeliveryStatus,
    InvalidDeliveryReport,
    OutboundSms,
    ProviderRejected,
    ProviderUnavailable,
    SendResult,
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


# -- many messages in one request (POST /v1/messages/batch) ------------------------------------------


def out(to: str, text: str = "hello", ref: str | None = None, sender: str | None = None) -> OutboundSms:
    return OutboundSms(to, text, ref or str(uuid.uuid4()), sender)


async def test_a_batch_answers_each_message_in_order_accepted_refused_or_not_now(provider, sim_a, new_phone):
    ok1, ok2 = new_phone(), new_phone()
    repeated = str(uuid.uuid4())
    batch = [
        out(ok1, "first", sender="ACME"),
        out("+14155550001"),  # reject rule: refused for good
        out("+14155550002"),  # outage rule: this item not now
        out(ok2, "second", ref=repeated),
        out("12345"),  # not E.164: refused for good
        out("+14155550005"),  # throttle rule: not now, with a retry-after
        out(ok2, "second", ref=repeated),  # the same clientRef again in the same request
        out(new_phone(), ""),  # empty text: refused
    ]
    results = await provider.send_many(batch)
    assert len(results) == len(batch)
    first, refused, down, second, bad_number, throttled, repeat, no_text = results

    assert isinstance(first, SendResult) and first.accepted and first.provider_message_id.startswith("sim_")
    assert isinstance(second, SendResult) and second.accepted
    assert isinstance(repeat, SendResult) and repeat.provider_message_id == second.provider_message_id
    assert isinstance(refused, ProviderRejected) and refused.code == "INVALID_NUMBER"
    assert "permanent rejection" in str(refused)
    assert isinstance(bad_number, ProviderRejected) and bad_number.code == "INVALID_NUMBER"
    assert isinstance(no_text, ProviderRejected) and no_text.code == "INVALID_TEXT"
    assert isinstance(down, ProviderUnavailable) and not isinstance(down, ProviderRejected)
    assert (down.code, down.maybe_sent, down.retry_after_s) == ("UNAVAILABLE", False, None)
    assert isinstance(throttled, ProviderUnavailable) and (throttled.code, throttled.retry_after_s) == ("THROTTLED", 1.0)

    [received] = await sim_a.wait_inbox(ok1)
    assert (received["text"], received["from"], received["clientRef"]) == ("first", "ACME", batch[0].client_ref)
    await sim_a.wait_inbox(ok2)
    await asyncio.sleep(0.3)
    assert len(await sim_a.inbox(ok2)) == 1  # sent once
    stats = await sim_a.stats()
    assert (stats["requests"], stats["batchRequests"], stats["batchItems"]) == (1, 1, 8)
    assert (stats["accepted"], stats["duplicates"]) == (2, 1)


async def test_a_batch_sent_again_after_a_timeout_sends_nothing_twice(provider, sim_a, receiver, new_phone):
    batch = [out(new_phone()) for _ in range(20)]
    first = await provider.send_many(batch)
    again = await provider.send_many(batch)  # the retry of a batch whose answer was lost
    assert [r.provider_message_id for r in again] == [r.provider_message_id for r in first]
    stats = await sim_a.stats()
    assert (stats["accepted"], stats["duplicates"]) == (20, 20)
    # Each accepted message gets its signed reports, like a single send.
    sent, delivered = await receiver.wait_for(first[7].provider_message_id, 2)
    assert provider.verify_webhook(receiver.url("sim-a"), delivered.headers, delivered.body)
    [report] = provider.parse_delivery_report(delivered.body)
    assert (report.status, report.client_ref) == (DeliveryStatus.DELIVERED, batch[7].client_ref)


async def test_a_whole_batch_that_fails_raises_unavailable(provider, sim_a, nowhere, new_phone):
    await sim_a.outage(True)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.send_many([out(new_phone()), out(new_phone())])
    assert (caught.value.code, caught.value.maybe_sent) == ("OUTAGE", False)
    await sim_a.outage(False)
    assert (await sim_a.stats())["accepted"] == 0

    bad = sim_a.provider(api_key="wrong")
    with pytest.raises(ProviderUnavailable) as caught:
        await bad.send_many([out(new_phone())])
    assert caught.value.code == "UNAUTHORIZED"
    await bad.aclose()

    away = HttpGatewayProvider("simulator", base_url=nowhere, api_key="k")
    with pytest.raises(ProviderUnavailable) as caught:
        await away.send_many([out(new_phone())])
    assert (caught.value.code, caught.value.maybe_sent) == ("UNREACHABLE", False)
    await away.aclose()


async def test_a_batch_is_limited_to_max_batch(sim_a, new_phone):
    assert sim_a.provider().max_batch == 500
    p = HttpGatewayProvider("simulator", base_url=sim_a.url, api_key="sim_test_key", max_batch=5)
    with pytest.raises(ValueError):
        await p.send_many([out(new_phone()) for _ in range(6)])
    assert await p.send_many([]) == []
    assert all(isinstance(r, SendResult) and r.accepted for r in await p.send_many([out(new_phone()) for _ in range(5)]))
    await p.aclose()
    with pytest.raises(ValueError):
        HttpGatewayProvider("x", base_url="http://127.0.0.1:1", api_key="k", max_batch=501)
    # The simulator refuses a request over 500 (or an empty one) whole, taking nothing.
    item = {"to": new_phone(), "text": "x", "clientRef": None}
    async with httpx.AsyncClient(base_url=sim_a.url, headers={"X-API-Key": "sim_test_key"}) as client:
        for messages in ([item] * 501, [], "nope"):
            r = await client.post("/v1/messages/batch", json={"messages": messages})
            assert (r.status_code, r.json()["error"]) == (400, "INVALID_REQUEST")
    assert (await sim_a.stats())["accepted"] == 5


def _answering(status: int, body: object, headers: dict | None = None) -> HttpGatewayProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/messages/batch"
        return httpx.Response(status, json=body, headers=headers)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return HttpGatewayProvider("gw", base_url="http://gw.test", api_key="k", client=client)


async def test_batch_answers_of_another_gateway_map_to_outcomes():
    p = _answering(200, {"results": [
        {"id": "m1", "status": "queued"},  # no clientRef echoed: fine
        {"clientRef": "r2", "id": "m2", "status": "failed"},  # answered, will not deliver
        {"clientRef": "r3", "error": "CARRIER_BUSY", "message": "try later", "retryable": True, "retryAfter": 30},
        {"clientRef": "r4", "error": "OPTED_OUT", "message": "recipient opted out"},
        {"clientRef": "r5"},  # neither id nor error
    ]})
    results = await p.send_many([out("+14155550100", ref=f"r{i}") for i in range(1, 6)])
    queued, not_accepted, busy, opted_out, unknown = results
    assert (queued.provider_message_id, queued.accepted, queued.status) == ("m1", True, "queued")
    assert (not_accepted.provider_message_id, not_accepted.accepted) == ("m2", False)
    assert isinstance(busy, ProviderUnavailable) and (busy.code, busy.retry_after_s) == ("CARRIER_BUSY", 30.0)
    assert isinstance(opted_out, ProviderRejected) and opted_out.code == "OPTED_OUT"
    assert isinstance(unknown, ProviderUnavailable) and unknown.maybe_sent


@pytest.mark.parametrize(
    ("status", "body", "code", "maybe_sent", "retry_after"),
    [
        (200, {"results": [{"id": "m1"}]}, "BAD_ANSWER", True, None),  # one result for two messages
        (200, {"results": [{"id": "m1", "clientRef": "r2"}, {"id": "m2", "clientRef": "r1"}]}, "BAD_ANSWER", True, None),
        (200, {"nothing": []}, "BAD_ANSWER", True, None),
        (429, {"error": "THROTTLED"}, "THROTTLED", False, 2.0),
        (503, {}, "HTTP_503", False, None),
        (400, {"error": "TOO_MANY", "message": "at most 100"}, "TOO_MANY", False, None),  # our bug, not theirs
    ],
)
async def test_a_batch_answer_that_says_nothing_per_message_fails_the_whole_call(
    status, body, code, maybe_sent, retry_after
):
    p = _answering(status, body, {"Retry-After": "2"} if status == 429 else None)
    with pytest.raises(ProviderUnavailable) as caught:
        await p.send_many([out("+14155550100", ref="r1"), out("+14155550101", ref="r2")])
    assert (caught.value.code, caught.value.maybe_sent, caught.value.retry_after_s) == (code, maybe_sent, retry_after)
