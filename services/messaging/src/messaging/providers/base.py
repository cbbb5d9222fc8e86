"""The one interface every SMS provider adapter implements, its results and its errors.

An adapter turns "send this text to this E.164 number" into the provider's API call and the
provider's delivery reports (webhooks) back into `DeliveryReport`s. Errors come in two kinds,
because the router and the send saga act on them differently:

- `ProviderUnavailable`: the provider could not take the message now (network error, timeout,
  5xx, 429, or it refuses our credentials). Retry later or fail over to the next provider; it
  counts against the provider's circuit breaker.
- `ProviderRejected`: the provider refused this message for good (bad number, bad text, opted-out
  recipient: a 4xx about the request). Another provider would most likely refuse it too, so no
  failover; the message fails.

Sending in bulk: `send_many` hands up to `max_batch` messages to the provider in one go and
answers one outcome per message, in order: a `SendResult`, or the `ProviderRejected` /
`ProviderUnavailable` of that message alone. It raises `ProviderUnavailable` only when the whole
call failed (nothing is known about any of the messages). Adapters whose API has no batch call
inherit a default that runs `send` for each message, a few at a time.

Webhook signatures are an HMAC-SHA256 over the full URL the provider called followed by the raw
body. The URL is the *public* one (through the gateway, e.g.
`http://127.0.0.1:8080/api/v1/webhooks/sms/simulator?x=1`), not what the service sees behind
nginx (`Host` loses the port there): build it from `sms_webhook_base_url` + `/{provider}` + the
query string, and pass that to `verify_webhook`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DeliveryStatus(StrEnum):
    SENT = "sent"  # handed to the carrier (for SNS, the last status we ever learn)
    DELIVERED = "delivered"  # the handset has it
    FAILED = "failed"  # undeliverable, expired or rejected after acceptance


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    accepted: bool  # False: the provider answered but will not deliver (status "failed"/"rejected")
    status: str = ""  # the provider's own word for it, for logs


@dataclass(frozen=True)
class OutboundSms:
    """One message for `send_many`: `to` is E.164, `client_ref` our message id."""

    to: str
    text: str
    client_ref: str
    sender: str | None = None


@dataclass(frozen=True)
class DeliveryReport:
    provider_message_id: str
    client_ref: str | None  # our message id, when the provider echoes it
    status: DeliveryStatus
    error: str | None = None


@dataclass(frozen=True)
class InboundSms:
    """An SMS a handset sent to one of our numbers, as the provider reported it."""

    provider_message_id: str  # the provider's id of the inbound message: our idempotency key
    from_number: str  # as the provider wrote it (normally E.164; the service normalises it)
    to_number: str  # our number
    text: str
    received_at: datetime | None = None  # when the provider got it (timezone-aware), if it says


class ProviderError(Exception):
    def __init__(self, provider: str, message: str, *, code: str | None = None) -> None:
        self.provider = provider
        self.code = code
        super().__init__(f"{provider}: {message}")


class ProviderUnavailable(ProviderError):
    """Retryable: fail over, retry later, count against the breaker.

    `maybe_sent` is True when the request may have reached the provider before it failed (a read
    timeout, a dropped connection after sending): failing over then risks a duplicate SMS, which
    we prefer to a lost one; the client reference lets a provider that deduplicates drop it.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        code: str | None = None,
        retry_after_s: float | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(provider, message, code=code)
        self.retry_after_s = retry_after_s
        self.maybe_sent = maybe_sent


class ProviderRejected(ProviderError):
    """Permanent for this message: do not fail over, do not retry."""


# What `send_many` answers for each message.
SendOutcome = SendResult | ProviderRejected | ProviderUnavailable


class InvalidDeliveryReport(ValueError):
    """A webhook body that is not a delivery report (or inbound message) of this provider's format."""


class SmsProvider(ABC):
    """One SMS provider. Implementations are safe to share between concurrent tasks."""

    name: str
    # False for providers that never call back (SNS): the message's last status is "sent".
    has_delivery_reports: bool = True
    # The most messages one `send_many` call takes (the router splits bigger batches).
    max_batch: int = 50
    # The default `send_many`: how many single sends it runs at once.
    send_many_concurrency: int = 8

    @abstractmethod
    async def send(
        self, to: str, text: str, client_ref: str, sender: str | None = None
    ) -> SendResult:
        """Hand one SMS to the provider. `to` is E.164; `client_ref` is our message id."""

    async def send_many(self, messages: Sequence[OutboundSms]) -> list[SendOutcome]:
        """Hand up to `max_batch` messages to the provider: one outcome per message, in order (a
        `SendResult`, or that message's `ProviderRejected` / `ProviderUnavailable`). Raises
        `ProviderUnavailable` only when the call as a whole failed.

        This default sends them one by one, `send_many_concurrency` at a time."""
        if not messages:
            return []
        gate = asyncio.Semaphore(max(1, self.send_many_concurrency))

        async def one(m: OutboundSms) -> SendOutcome:
            async with gate:
                try:
                    return await self.send(m.to, m.text, m.client_ref, m.sender)
                except (ProviderRejected, ProviderUnavailable) as exc:
                    return exc

        return list(await asyncio.gather(*(one(m) for m in messages)))

    def verify_webhook(self, url: str, headers: Mapping[str, str], body: bytes) -> bool:
        """Whether a delivery-report request is genuinely from this provider."""
        return False

    def parse_delivery_report(
        self, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[DeliveryReport]:
        """The reports in a verified webhook body; `InvalidDeliveryReport` if it is malformed."""
        raise InvalidDeliveryReport(f"{self.name} sends no delivery reports")

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[list[DeliveryReport], list[InboundSms]]:
        """Everything a verified webhook body carries: delivery reports and inbound messages, each
        in body order; `InvalidDeliveryReport` if any of it is malformed (nothing is half-read).
        Providers without inbound messages only have reports."""
        return self.parse_delivery_report(body, headers), []

    async def aclose(self) -> None:  # noqa: B027  (optional hook)
        """Release connections."""


def webhook_signature(secret: str, url: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `url` followed by `body`: the `X-Signature` of a delivery report."""
    return hmac.new(secret.encode(), url.encode() + body, hashlib.sha256).hexdigest()


def signature_matches(secrets: Iterable[str], url: str, body: bytes, signature: str | None) -> bool:
    """Constant-time check of `signature` against each secret (several while one is rotated)."""
    if not signature or len(signature) > 256:
        return False
    given = signature.strip().lower().encode()
    ok = False
    for secret in secrets:
        if secret:
            # No short-circuit: every secret is compared, so timing does not tell which matched.
            ok |= hmac.compare_digest(webhook_signature(secret, url, body).encode(), given)
    return ok


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header from a case-insensitive (Starlette, httpx) or a plain dict mapping."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
