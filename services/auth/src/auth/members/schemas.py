from typing import Annotated, Literal

from common.api import CamelModel, InputModel
from pydantic import EmailStr, Field, StringConstraints

Role = Literal["OWNER", "ADMIN", "AGENT"]


class MemberInvite(InputModel):
    email: EmailStr = Field(max_length=254)
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    role: Role = "AGENT"


class MemberUpdate(InputModel):
    role: Role


class MemberRead(CamelModel):
    user_id: str
    email: str | None
    phone: str | None
    name: str
    role: Role
