from common.settings import BaseServiceSettings


class ProviderSyncSettings(BaseServiceSettings):
    service_name: str = "provider-sync"
    http_port: int = 8106
