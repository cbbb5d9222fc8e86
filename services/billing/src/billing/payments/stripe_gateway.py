"""The only module that talks to Stripe: creating PaymentIntents, refunding them (to pay out
withdrawals) and checking webhook signatures. The API base address is a setting, so tests and
the local stack use localstripe."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import stripe
from common.errors import AppError, BadRequest, ServiceUnavailable

from billing.settings import BillingSettings

log = logging.getLogger("billing.payments.stripe")

MAX_EVENT_ID = 100  # stripe_events.id


class PaymentProviderError(AppError):
    status_code, code, message = 502, "PAYMENT_PROVIDER_ERROR", "The payment provider refused the request"


class BadSignature(BadRequest):
    code, message = "INVALID_SIGNATURE", "Invalid Stripe signature"


@dataclass(frozen=True)
class CreatedIntent:
    id: str
    client_secret: str
    status: str


class RefundRefused(PaymentProviderError):
    """Stripe answered and said no (the charge is disputed, already refunded, too old...): no
    money moved, so the caller may pay another way."""

    code, message = "REFUND_REFUSED", "The payment provider refused the refund"


@dataclass(frozen=True)
class CreatedRefund:
    id: str
    amount: int
    status: str
    charge_id: str | None
    # Stripe's total refunded on the charge right after this refund (ours and every earlier one),
    # None when Stripe did not return the charge.
    charge_amount_refunded: int | None


@dataclass(frozen=True)
class VerifiedEvent:
    id: str
    type: str
    payload: dict[str, Any]


class StripeGateway:
    def __init__(self, settings: BillingSettings) -> None:
        self.settings = settings
        self._client: stripe.StripeClient | None = None
        self._http: stripe.HTTPXClient | None = None
        if settings.stripe_api_key:
            self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_s)
            self._client = stripe.StripeClient(
                settings.stripe_api_key,
                base_addresses={"api": settings.stripe_api_base},
                http_client=self._http,
                max_network_retries=2,  # the library retries with the same idempotency key
            )

    async def __aenter__(self) -> StripeGateway:
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._http is not None:
            await self._http.close_async()

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def create_payment_intent(
        self, *, amount: int, currency: str, metadata: dict[str, str], idempotency_key: str
    ) -> CreatedIntent:
        if self._client is None:
            raise ServiceUnavailable("Top-ups are not configured", code="PAYMENTS_UNAVAILABLE")
        try:
            intent = await self._client.v1.payment_intents.create_async(
                {"amount": amount, "currency": currency.lower(), "metadata": metadata},
                {"idempotency_key": idempotency_key},
            )
        except stripe.APIConnectionError as exc:
            log.warning("stripe unreachable", extra={"error": str(exc)})
            raise ServiceUnavailable("The payment provider is unreachable", code="PAYMENTS_UNAVAILABLE") from exc
        except stripe.StripeError as exc:
            log.warning("stripe refused a payment intent", extra={"error": str(exc), "http_status": exc.http_status})
            raise PaymentProviderError() from exc
        if not intent.client_secret:
            raise PaymentProviderError("The payment provider returned no client secret")
        return CreatedIntent(id=intent.id, client_secret=intent.client_secret, status=intent.status)

    async def refund(
        self, *, payment_intent: str, amount: int, metadata: dict[str, str], idempotency_key: str
    ) -> CreatedRefund:
        """Refund `amount` of a PaymentIntent. RefundRefused when Stripe says no (nothing moved);
        any other failure leaves the outcome unknown (ServiceUnavailable / PaymentProviderError):
        retry with the same idempotency key, never pay the money another way."""
        if self._client is None:
            raise ServiceUnavailable("Refunds are not configured", code="PAYMENTS_UNAVAILABLE")
        try:
            refund = await self._client.v1.refunds.create_async(
                # The charge comes back expanded: its amount_refunded is Stripe's total after this
                # refund, which keeps our count of refunds right even on an idempotent replay.
                {"payment_intent": payment_intent, "amount": amount, "metadata": metadata, "expand": ["charge"]},
                {"idempotency_key": idempotency_key},
            )
        except (stripe.InvalidRequestError, stripe.CardError) as exc:
            log.warning("stripe refused a refund", extra={"error": str(exc), "payment_intent": payment_intent})
            raise RefundRefused() from exc
        except stripe.APIConnectionError as exc:
            log.warning("stripe unreachable", extra={"error": str(exc)})
            raise ServiceUnavailable("The payment provider is unreachable", code="PAYMENTS_UNAVAILABLE") from exc
        except stripe.StripeError as exc:
            log.warning("stripe refund failed", extra={"error": str(exc), "http_status": exc.http_status})
            raise PaymentProviderError() from exc
        if refund.status in ("failed", "canceled"):
            raise RefundRefused(f"The payment provider answered the refund with status {refund.status}")
        charge = refund.charge
        if isinstance(charge, str) or charge is None:
            charge_id, refunded = charge, None
        else:
            charge_id, refunded = charge.id, charge.amount_refunded
        return CreatedRefund(
            id=refund.id, amount=refund.amount, status=refund.status or "succeeded", charge_id=charge_id,
            charge_amount_refunded=refunded if isinstance(refunded, int) else None,
        )

    def verify(self, payload: bytes, signature: str | None) -> VerifiedEvent:
        """The event, if `signature` matches one of the webhook secrets within the tolerance."""
        secrets = [s for s in self.settings.stripe_webhook_secrets if s]
        if not secrets:
            raise ServiceUnavailable("Stripe webhooks are not configured", code="WEBHOOK_UNAVAILABLE")
        if not signature or len(signature) > 2048:
            raise BadSignature("Missing Stripe-Signature header")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadSignature() from exc
        if not any(_signed_with(text, signature, secret) for secret in secrets):
            raise BadSignature()
        # Checked after the signature (so the timestamp is Stripe's): an old delivery is refused
        # even though it is genuine, which bounds how long a captured request can be replayed.
        if _timestamp(signature) < time.time() - self.settings.stripe_webhook_tolerance_s:
            raise BadSignature("Stripe signature timestamp is too old", code="SIGNATURE_EXPIRED")
        try:
            event = json.loads(text)
        except ValueError as exc:
            raise BadRequest("The event is not JSON", code="MALFORMED_EVENT") from exc
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and 0 < len(event["id"]) <= MAX_EVENT_ID
            and isinstance(event.get("type"), str)
            and 0 < len(event["type"]) <= 100
            and isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("object"), dict)
        ):
            raise BadRequest("The event lacks an id, a type or a data object", code="MALFORMED_EVENT")
        return VerifiedEvent(id=event["id"], type=event["type"], payload=event)


def _signed_with(payload: str, header: str, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False
    return True


def _timestamp(header: str) -> int:
    # Parsed as verify_header parses it (which has accepted it): the first `t` item.
    items = [item.split("=", 2) for item in header.split(",")]
    return int(next(item[1] for item in items if item[0] == "t"))
