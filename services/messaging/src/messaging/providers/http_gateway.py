"""A generic HTTP SMS gateway (the shape of SMS-Man/TextVerified-style APIs), and the simulator.

Wire format (what `scripts/sms_simulator.py` speaks too, so the same adapter talks to both):

    POST {base_url}/v1/messages
    X-API-Key: <api key>
    {"to": "+14155550123", "text": "...", "sender": "ACME" | null, "clientRef": "<our message id>"}
    -> 2xx {"id": "<provider message id>", "status": "accepted" | "queued" | "sent" | "failed" | ...}
    -> 4xx {"error": "<code>", "message": "..."}: refused (401/403: our credentials)
    -> 429 / 5xx: not now

    Many messages in one request (what the dispatcher uses; 1 to 500 per request):

    POST {base_url}/v1/messages/batch
    X-API-Key: <api key>
    {"messages": [{"to", "text", "sender", "clientRef"}, ...]}
    -> 200 {"results": [<one per message, in the order sent>]}, each either
         accepted:  {"clientRef": "...", "id": "<provider message id>", "status": "accepted" | ...,
                     "duplicate": true?}
         refused:   {"clientRef": "...", "error": "<code>", "message": "..."}: this message, for
                     good (INVALID_NUMBER, INVALID_TEXT, ...)
         not now:   {"clientRef": "...", "error": "<code>", "message": "...", "retryable": true,
                     "retryAfter": <seconds>?}: this message only, try again later or elsewhere
                     (UNAVAILABLE, THROTTLED; those two codes count as retryable even without
                     the flag)
    -> 401/403, 429, 5xx: the whole request is refused or failed, nothing was taken (the same
       meaning as for a single message: retry or fail over every message of it)
    -> any other 4xx: the request itself is malformed (not a list, more than 500): nothing was
       taken; treated like "not now" for every message (it is our bug, not the messages')

    Each item follows the single endpoint's rules, `clientRef` idempotency included (a repeat,
    in another request or within the same one, answers the first message's id). An answer whose
    `results` do not match the messages one for one (count, or an echoed `clientRef` that
    differs) is unreadable: every message of it is "not now, and maybe sent".

    Webhooks, POSTed by the gateway to our webhook URL: one item or a list of 1 to 1,000 items,
    delivery reports and inbound messages mixed, each list in the order things happened:
    X-Signature: hex HMAC-SHA256(webhook secret, <the URL it called> + <raw body>)
    a delivery report (no "type", or "type": "status"):
    {"id": "<provider message id>", "clientRef": "..." | null,
     "status": "sent" | "delivered" | "failed" | ..., "error": "..."?}
    an inbound message (a handset texted one of our numbers):
    {"type": "inbound", "id": "<provider id of the inbound message>", "from": "+1415...",
     "to": "<our number>", "text": "...", "receivedAt": "2026-01-31T12:00:00Z"?}

    Inbound fields: `id` 1-128 characters, unique per provider (a redelivery of the same `id` is
    one message); `from` and `to` 1-32 characters (E.164 expected); `text` a string of at most
    10,000 characters (may be empty: an MMS without text); `receivedAt` RFC 3339, optional (no
    offset means UTC). Any other `type` makes the whole body invalid.

`clientRef` is also the gateway's idempotency key: sending the same one again answers the first
message's id instead of sending twice (the simulator does this), so a retry after a timeout is
safe against a gateway that honours it (a batch retried whole after a timeout included).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from common.http import http_client

from messaging.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundSms,
    InvalidDeliveryReport,
    OutboundSms,
    ProviderRejected,
    ProviderUnavailable,
    SendOutcome,
    SendResult,
    SmsProvider,
    header,
    signature_matches,
)

log = logging.getLogger("messaging.providers.http_gateway")

SIGNATURE_HEADER = "X-Signature"
API_KEY_HEADER = "X-API-Key"
MAX_REPORTS = 1000  # items (reports and inbound messages) per webhook request
MAX_ID = 128
MAX_PHONE = 32
MAX_INBOUND_TEXT = 10_000  # characters; longer is not an SMS (the service cuts at 1,600)
MAX_SEND_BATCH = 500  # messages per POST /v1/messages/batch
# Item error codes that mean "not now" even without `"retryable": true`.
_RETRYABLE_ITEM_CODES = {"UNAVAILABLE", "THROTTLED"}

# Provider statuses (send answers and reports) and what they mean to us.
_NOT_ACCEPTED = {"failed", "rejected", "undeliverable", "error"}
_REPORT_STATUS = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "failed": DeliveryStatus.FAILED,
    "undelivered": DeliveryStatus.FAILED,
    "undeliverable": DeliveryStatus.FAILED,
    "rejected": DeliveryStatus.FAILED,
    "expired": DeliveryStatus.FAILED,
}


class HttpGatewayProvider(SmsProvider):
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str,
        webhook_secrets: Sequence[str] = (),
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
        max_batch: int = MAX_SEND_BATCH,
    ) -> None:
        if not base_url:
            raise ValueError(f"SMS provider {name!r} has no base URL")
        if not 1 <= max_batch <= MAX_SEND_BATCH:
            raise ValueError(f"max_batch must be 1 to {MAX_SEND_BATCH}")
        self.name = name
        self.max_batch = max_batch
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secrets = tuple(s for s in webhook_secrets if s)
        self._client = client or http_client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)))
        self._own_client = client is None

    async def send(
        self, to: str, text: str, client_ref: str, sender: str | None = None
    ) -> SendResult:
        payload = {"to": to, "text": text, "sender": sender, "clientRef": client_ref}
        response = await self._post("/v1/messages", payload)
        status = response.status_code
        if status == 429 or status >= 500 or status in (401, 403):
            # 401/403: the gateway refuses *us* (key revoked, account blocked), not this message:
            # another provider may take it, and the breaker should stop us hammering this one.
            raise ProviderUnavailable(
                self.name,
                f"HTTP {status}: {_error_text(response)}",
                code=_error_code(response) or f"HTTP_{status}",
                retry_after_s=_retry_after(response),
            )
        if status >= 400:
            raise ProviderRejected(
                self.name, f"HTTP {status}: {_error_text(response)}", code=_error_code(response) or f"HTTP_{status}"
            )
        try:
            body = response.json()
            message_id = body["id"]
        except (ValueError, KeyError, TypeError) as exc:
            # It answered 2xx, so it probably took the message; we cannot tell which id it has.
            raise ProviderUnavailable(
                self.name, f"unreadable answer: {response.text[:200]!r}", code="BAD_ANSWER", maybe_sent=True
            ) from exc
        provider_status = str(body.get("status") or "accepted").lower()
        return SendResult(
            provider_message_id=str(message_id),
            accepted=provider_status not in _NOT_ACCEPTED,
            status=provider_status,
        )

    async def send_many(self, messages: Sequence[OutboundSms]) -> list[SendOutcome]:
        """One `POST /v1/messages/batch` for up to `max_batch` messages (see the module docstring)."""
        if not messages:
            return []
        if len(messages) > self.max_batch:
            raise ValueError(f"{len(messages)} messages in one batch; at most {self.max_batch}")
        payload = {
            "messages": [
                {"to": m.to, "text": m.text, "sender": m.sender, "clientRef": m.client_ref} for m in messages
            ]
        }
        response = await self._post("/v1/messages/batch", payload)
        status = response.status_code
        if status >= 400:
            # 401/403/429/5xx as for one message; any other 4xx refuses the request itself, not
            # the messages in it: nothing was taken, so "not now" for all of them.
            raise ProviderUnavailable(
                self.name,
                f"batch: HTTP {status}: {_error_text(response)}",
                code=_error_code(response) or f"HTTP_{status}",
                retry_after_s=_retry_after(response),
            )
        try:
            results = response.json()["results"]
            if not isinstance(results, list) or len(results) != len(messages):
                raise ValueError("results do not match the messages")
            for item, message in zip(results, messages, strict=True):
                if not isinstance(item, dict):
                    raise ValueError("a result is not an object")
                echoed = item.get("clientRef")
                if echoed is not None and echoed != message.client_ref:
                    raise ValueError("a result answers another message")
        except (ValueError, KeyError, TypeError) as exc:
            # It answered 2xx, so it probably took (some of) them; we cannot tell which.
            raise ProviderUnavailable(
                self.name, f"unreadable batch answer: {response.text[:200]!r}", code="BAD_ANSWER", maybe_sent=True
            ) from exc
        return [self._item_outcome(item) for item in results]

    def _item_outcome(self, item: dict[str, Any]) -> SendOutcome:
        message_id, error = item.get("id"), item.get("error")
        if error is None and message_id is None:
            # Neither an id nor an error: taken or not, we cannot tell.
            return ProviderUnavailable(self.name, "a result without id or error", code="BAD_ANSWER", maybe_sent=True)
        if error is not None:
            code = str(error)[:64]
            text = f"{code}: {str(item.get('message') or '')[:200]}"
            if item.get("retryable") is True or code in _RETRYABLE_ITEM_CODES:
                retry_after = item.get("retryAfter")
                return ProviderUnavailable(
                    self.name, text, code=code,
                    retry_after_s=max(0.0, float(retry_after)) if isinstance(retry_after, int | float) else None,
                )
            return ProviderRejected(self.name, text, code=code)
        provider_status = str(item.get("status") or "accepted").lower()
        return SendResult(
            provider_message_id=str(message_id),
            accepted=provider_status not in _NOT_ACCEPTED,
            status=provider_status,
        )

    async def _post(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        try:
            return await self._client.post(
                f"{self.base_url}{path}", json=payload, headers={API_KEY_HEADER: self._api_key}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the gateway: failing over cannot duplicate the SMS.
            raise ProviderUnavailable(self.name, f"unreachable: {exc!r}", code="UNREACHABLE") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                self.name, f"no answer: {exc!r}", code="NO_ANSWER", maybe_sent=True
            ) from exc

    def verify_webhook(self, url: str, headers: Mapping[str, str], body: bytes) -> bool:
        return signature_matches(self._secrets, url, body, header(headers, SIGNATURE_HEADER))

    def parse_delivery_report(
        self, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[DeliveryReport]:
        reports, inbound = self.parse_webhook(body, headers)
        if inbound:
            raise InvalidDeliveryReport("the body holds inbound messages, not only delivery reports")
        return reports

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[list[DeliveryReport], list[InboundSms]]:
        try:
            data = json.loads(body)
        except ValueError as exc:  # UnicodeDecodeError included
            raise InvalidDeliveryReport("the body is not JSON") from exc
        items = data if isinstance(data, list) else [data]
        if not items or len(items) > MAX_REPORTS:
            raise InvalidDeliveryReport(f"expected 1 to {MAX_REPORTS} items")
        reports: list[DeliveryReport] = []
        inbound: list[InboundSms] = []
        for item in items:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind is None or kind == "status":
                reports.append(_report(item))
            elif kind == "inbound":
                inbound.append(_inbound(item))
            else:
                raise InvalidDeliveryReport(f"an item has an unknown type: {str(kind)[:40]!r}")
        return reports, inbound

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


def _report(item: Any) -> DeliveryReport:
    if not isinstance(item, dict):
        raise InvalidDeliveryReport("a report is not an object")
    message_id, client_ref, status, error = (
        item.get("id"), item.get("clientRef"), item.get("status"), item.get("error")
    )
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID:
        raise InvalidDeliveryReport("a report has no valid id")
    if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > MAX_ID):
        raise InvalidDeliveryReport("a report has an invalid clientRef")
    if not isinstance(status, str) or status.lower() not in _REPORT_STATUS:
        raise InvalidDeliveryReport(f"a report has an unknown status: {str(status)[:40]!r}")
    if error is not None and not isinstance(error, str):
        error = json.dumps(error)
    return DeliveryReport(
        provider_message_id=message_id,
        client_ref=client_ref or None,
        status=_REPORT_STATUS[status.lower()],
        error=error[:500] if error else None,
    )


def _inbound(item: dict[str, Any]) -> InboundSms:
    message_id, sender, to, text, at = (
        item.get("id"), item.get("from"), item.get("to"), item.get("text"), item.get("receivedAt")
    )
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID:
        raise InvalidDeliveryReport("an inbound message has no valid id")
    for name, value in (("from", sender), ("to", to)):
        if not isinstance(value, str) or not 0 < len(value.strip()) <= MAX_PHONE:
            raise InvalidDeliveryReport(f"an inbound message has no valid {name!r}")
    if not isinstance(text, str) or len(text) > MAX_INBOUND_TEXT:
        raise InvalidDeliveryReport("an inbound message has no valid text")
    received_at = None
    if at is not None:
        try:
            received_at = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            received_at = None
        if received_at is None:
            raise InvalidDeliveryReport("an inbound message has an invalid receivedAt")
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
    return InboundSms(
        provider_message_id=message_id,
        from_number=sender.strip(),  # type: ignore[union-attr]
        to_number=to.strip(),  # type: ignore[union-attr]
        text=text,
        received_at=received_at,
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(response: httpx.Response) -> str | None:
    code = _json(response).get("error")
    return str(code)[:64] if code else None


def _error_text(response: httpx.Response) -> str:
    body = _json(response)
    return str(body.get("message") or body.get("error") or response.text[:200] or response.reason_phrase)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from SMS gateways, and the breaker paces us anyway
