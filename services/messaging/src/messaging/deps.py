"""Request dependencies the messaging endpoints share."""

from typing import Annotated

from common.app import app_settings
from fastapi import Depends

from messaging.settings import MessagingSettings

SettingsDep = Annotated[MessagingSettings, Depends(app_settings)]
