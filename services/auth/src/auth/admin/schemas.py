from datetime import datetime

from common.api import CamelModel


class AdminUserRead(CamelModel):
    id: str
    email: str | None
    phone: str | None
    name: str
    is_platform_admin: bool
    created_at: datetime


class RotatedKeyRead(CamelModel):
    kid: str
