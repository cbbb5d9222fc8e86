from typing import Annotated, Literal

from common.api import CamelModel, InputModel
from pydantic import Field, StringConstraints

Phone = Annotated[str, StringConstraints(min_length=4, max_length=32)]
Purpose = Literal["login", "verify_phone"]


class SendOtpRequest(InputModel):
    phone: Phone
    purpose: Purpose = "login"


class SendOtpRead(CamelModel):
    challenge_id: str
    phone: str
    expires_in: int
    resend_in: int


class VerifyOtpRequest(InputModel):
    phone: Phone
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")]
    purpose: Purpose = "login"
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
