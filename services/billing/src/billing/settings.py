from common.settings import BaseServiceSettings


class BillingSettings(BaseServiceSettings):
    service_name: str = "billing"
    http_port: int = 8105
    default_currency: str = "USD"
    # Used when no pricing rule matches, so a fresh platform can send before an admin sets prices.
    default_sms_price_minor: int = 5
    default_order_price_minor: int = 50

    # -- Stripe top-ups (billing.payments) ----------------------------------------------------
    # Empty key: top-ups answer 503. The local stack points these at localstripe (devstack.py).
    stripe_api_key: str = ""
    stripe_api_base: str = "https://api.stripe.com"
    stripe_timeout_s: float = 10.0
    # Every secret a webhook signature may match, so a secret can be rotated without downtime
    # (SB_STRIPE_WEBHOOK_SECRETS='["whsec_new","whsec_old"]'). Empty: the webhook answers 503.
    stripe_webhook_secrets: list[str] = []
    stripe_webhook_tolerance_s: int = 300
