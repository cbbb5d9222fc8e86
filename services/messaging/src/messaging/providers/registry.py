"""The providers and the router as the settings configure them."""

from __future__ import annotations

from messaging.providers.base import SmsProvider
from messaging.providers.http_gateway import HttpGatewayProvider
from messaging.providers.routing import Router
from messaging.providers.sns import SnsProvider
from messaging.settings import MessagingSettings


def build_provider(name: str, settings: MessagingSettings) -> SmsProvider:
    """One provider by its name in `sms_routes`: simulator, gateway or sns."""
    timeout = settings.sms_provider_timeout_s
    if name in ("simulator", "gateway"):
        # The simulator speaks the generic gateway's wire format; only their settings differ.
        return HttpGatewayProvider(
            name,
            base_url=getattr(settings, f"sms_{name}_base_url"),
            api_key=getattr(settings, f"sms_{name}_api_key"),
            webhook_secrets=getattr(settings, f"sms_{name}_webhook_secrets"),
            timeout_s=timeout,
        )
    if name == "sns":
        return SnsProvider(
            "sns",
            region=settings.sms_sns_region,
            endpoint_url=settings.sms_sns_endpoint_url or None,
            sms_type=settings.sms_sns_sms_type,
            default_sender_id=settings.sms_sns_sender_id or None,
            access_key_id=settings.sms_sns_access_key_id or None,
            secret_access_key=settings.sms_sns_secret_access_key or None,
            timeout_s=timeout,
        )
    raise ValueError(f"unknown SMS provider {name!r}")


def build_router(settings: MessagingSettings) -> Router:
    """A router over every provider `sms_routes` names (build it once per process, in lifespan or
    the worker's startup, and `aclose()` it at shutdown)."""
    names = sorted({name for names in settings.sms_routes.values() for name in names})
    return Router(
        {name: build_provider(name, settings) for name in names},
        settings.sms_routes,
        failure_threshold=settings.sms_breaker_failures,
        open_for_s=settings.sms_breaker_open_s,
    )


def webhook_url(settings: MessagingSettings, provider: str, query: str = "") -> str:
    """The public URL `provider` calls with delivery reports, as its signature covers it."""
    url = f"{settings.sms_webhook_base_url.rstrip('/')}/{provider}"
    return f"{url}?{query}" if query else url
