from common.settings import BaseServiceSettings


class MessagingSettings(BaseServiceSettings):
    service_name: str = "messaging"
    http_port: int = 8102
