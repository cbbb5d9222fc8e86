from common.settings import BaseServiceSettings


class BillingSettings(BaseServiceSettings):
    service_name: str = "billing"
    http_port: int = 8105
    default_currency: str = "USD"
    # Used when no pricing rule matches, so a fresh platform can send before an admin sets prices.
    default_sms_price_minor: int = 5
    default_order_price_minor: int = 50
