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


class UserRead(CamelModel):
    id: str
    email: str | None
    phone: str | None
    name: str
    tenant_id: str
    role: str


class TokenRead(CamelModel):
    user: UserRead
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
