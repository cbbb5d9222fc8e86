"""SMS provider adapters behind one interface (`SmsProvider`), and the router that picks one.

- `base`: the interface, `SendResult`, `DeliveryReport`, the two error kinds, webhook signatures
- `http_gateway`: a generic HTTP SMS gateway; the local simulator speaks the same wire format
- `sns`: AWS SNS through boto3 (no client reference, no delivery reports: status stops at "sent")
- `routing`: per-country ordered providers, failover, a circuit breaker per provider
- `registry`: all of it built from `MessagingSettings`
"""

from messaging.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InvalidDeliveryReport,
    OutboundSms,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    SendOutcome,
    SendResult,
    SmsProvider,
    webhook_signature,
)
from messaging.providers.routing import (
    BreakerState,
    CircuitBreaker,
    Dispatched,
    NoProviderAvailable,
    Router,
)

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "DeliveryReport",
    "DeliveryStatus",
    "Dispatched",
    "InvalidDeliveryReport",
    "NoProviderAvailable",
    "OutboundSms",
    "ProviderError",
    "ProviderRejected",
    "ProviderUnavailable",
    "Router",
    "SendOutcome",
    "SendResult",
    "SmsProvider",
    "webhook_signature",
]
