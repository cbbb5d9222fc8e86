from common.settings import BaseServiceSettings


class ChatSettings(BaseServiceSettings):
    service_name: str = "chat"
    http_port: int = 8103
