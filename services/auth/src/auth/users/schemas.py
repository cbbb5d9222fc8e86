from typing import Annotated

from common.api import CamelModel, InputModel
from pydantic import EmailStr, Field, StringConstraints

Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Password = Annotated[str, Field(min_length=8, max_length=128)]


class RegisterRequest(InputModel):
    email: EmailStr = Field(max_length=254)
    password: Password
    name: Name
    tenant_name: Annotated[str, StringConstraints(min_length=1, max_length=120)] | None = None


class LoginRequest(InputModel):
    email: EmailStr = Field(max_length=254)
    password: Annotated[str, Field(min_length=1, max_length=128)]


class ProfileUpdate(InputModel):
    """Only these fields: role, tenant or admin flags are not part of a profile (extra=forbid)."""

    name: Name | None = None
    about: Annotated[str, StringConstraints(max_length=500)] | None = None
    avatar_media_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None


class PublicUser(CamelModel):
    """What another user may see."""

    id: str
    name: str
    phone: str | None = None
    about: str | None = None
    avatar_media_id: str | None = None
