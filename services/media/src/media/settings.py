from common.settings import BaseServiceSettings


class MediaSettings(BaseServiceSettings):
    service_name: str = "media"
    http_port: int = 8104
    # The S3 bucket media bytes go to (infra/terraform gives it as SB_MEDIA_BUCKET; the uploads
    # themselves come with the media issue).
    media_bucket: str = ""
