from typing import Annotated

from common.api import CamelModel, InputModel
from pydantic import Field

RefreshTokenStr = Annotated[str, Field(min_length=20, max_length=200)]


class UserRead(CamelModel):
    id: str
    email: str | None
    phone: str | None
    name: str
    about: str | None = None
    avatar_media_id: str | None = None
    tenant_id: str
    role: str
    is_platform_admin: bool = False


class TokenRead(CamelModel):
    user: UserRead
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    new_user: bool = False


class RefreshRequest(InputModel):
    refresh_token: RefreshTokenStr


class LogoutRequest(InputModel):
    refresh_token: RefreshTokenStr
