from typing import Annotated

from common.api import InputModel
from pydantic import EmailStr, Field


class ResetRequest(InputModel):
    email: EmailStr = Field(max_length=254)


class ResetConfirm(InputModel):
    token: Annotated[str, Field(min_length=20, max_length=200)]
    new_password: Annotated[str, Field(min_length=8, max_length=128)]
