from common.settings import BaseServiceSettings


class MediaSettings(BaseServiceSettings):
    service_name: str = "media"
    http_port: int = 8104
