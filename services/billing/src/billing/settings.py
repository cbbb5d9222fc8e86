from common.settings import BaseServiceSettings


class BillingSettings(BaseServiceSettings):
    service_name: str = "billing"
    http_port: int = 8105
    default_currency: str = "USD"
