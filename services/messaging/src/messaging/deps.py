"""Request dependencies the messaging endpoints share."""

from typing import Annotated

from common.app import app_settings
from fastapi import Depends, Header

from messaging.settings import MessagingSettings

SettingsDep = Annotated[MessagingSettings, Depends(app_settings)]
# The sends take an optional Idempotency-Key, with the rules of common.idempotency's (required) one.
OptionalIdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
