"""The HTTP gateway's webhook bodies: delivery reports and inbound messages, mixed in one list."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from messaging.providers.base import DeliveryStatus, InboundSms, InvalidDeliveryReport
from messaging.providers.http_gateway import HttpGatewayProvider

P = HttpGatewayProvider("simulator", base_url="http://127.0.0.1:1", api_key="k", webhook_secrets=("s",))


def body(value) -> bytes:  # noqa: ANN001
    return json.dumps(value).encode()


def test_reports_and_inbound_messages_are_told_apart_in_body_order():
    reports, inbound = P.parse_webhook(
        body(
            [
                {"id": "a", "clientRef": "r1", "status": "sent"},
                {"type": "inbound", "id": "in1", "from": "+14155550123", "to": " +18005550100 ", "text": "STOP"},
                {"type": "status", "id": "a", "clientRef": "r1", "status": "delivered"},
                {"type": "inbound", "id": "in2", "from": "+14155550124", "to": "+18005550100", "text": "",
                 "receivedAt": "2026-01-31T12:00:00Z"},
            ]
        )
    )
    assert [(r.provider_message_id, r.status) for r in reports] == [
        ("a", DeliveryStatus.SENT), ("a", DeliveryStatus.DELIVERED)
    ]
    assert inbound == [
        InboundSms("in1", "+14155550123", "+18005550100", "STOP", None),
        InboundSms("in2", "+14155550124", "+18005550100", "", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ]


def test_a_single_inbound_object_and_a_naive_time_read_as_utc():
    reports, [sms] = P.parse_webhook(
        body({"type": "inbound", "id": "x", "from": "ACME", "to": "+18005550100", "text": "hi 👋",
              "receivedAt": "2026-01-31T12:00:00"})
    )
    assert reports == []
    assert (sms.from_number, sms.text, sms.received_at) == ("ACME", "hi 👋", datetime(2026, 1, 31, 12, tzinfo=UTC))


def test_parse_delivery_report_keeps_working_and_refuses_inbound_items():
    [report] = P.parse_delivery_report(body({"id": "a", "status": "delivered"}))
    assert report.status == DeliveryStatus.DELIVERED
    with pytest.raises(InvalidDeliveryReport):
        P.parse_delivery_report(body({"type": "inbound", "id": "x", "from": "+1415", "to": "+1800", "text": "t"}))


GOOD = {"type": "inbound", "id": "x", "from": "+14155550123", "to": "+18005550100", "text": "t"}


@pytest.mark.parametrize(
    "item",
    [
        {**GOOD, "type": "read"},
        {**GOOD, "id": ""},
        {**GOOD, "id": "i" * 129},
        {k: v for k, v in GOOD.items() if k != "from"},
        {**GOOD, "to": "   "},
        {**GOOD, "to": "+1" * 20},
        {**GOOD, "text": None},
        {**GOOD, "text": "a" * 10_001},
        {**GOOD, "receivedAt": "yesterday"},
        {**GOOD, "receivedAt": 1700000000},
    ],
)
def test_malformed_inbound_items_make_the_whole_body_invalid(item):
    with pytest.raises(InvalidDeliveryReport):
        P.parse_webhook(body([{"id": "a", "status": "sent"}, item]))


def test_more_than_1000_items_are_refused():
    with pytest.raises(InvalidDeliveryReport):
        P.parse_webhook(body([{"id": str(i), "status": "sent"} for i in range(1001)]))
    reports, _ = P.parse_webhook(body([{"id": str(i), "status": "sent"} for i in range(1000)]))
    assert len(reports) == 1000


def test_the_base_interface_has_no_inbound_messages():
    from messaging.providers.base import SmsProvider

    class Quiet(SmsProvider):
        name = "quiet"

        async def send(self, to, text, client_ref, sender=None):  # noqa: ANN001, ANN202
            raise NotImplementedError

    with pytest.raises(InvalidDeliveryReport):
        Quiet().parse_webhook(b"{}")
