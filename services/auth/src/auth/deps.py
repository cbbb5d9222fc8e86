"""Typed access to what the auth app builds in its lifespan."""

from typing import Annotated

from common.app import app_settings
from common.ratelimit import RateLimiter, client_ip
from fastapi import Depends, Request

from auth.settings import AuthSettings


async def _limiter(request: Request) -> RateLimiter:
    return request.app.state.limiter


async def _ip(request: Request) -> str:
    return client_ip(request)


SettingsDep = Annotated[AuthSettings, Depends(app_settings)]
LimiterDep = Annotated[RateLimiter, Depends(_limiter)]
ClientIpDep = Annotated[str, Depends(_ip)]
