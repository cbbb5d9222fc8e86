"""Typed access to what the auth app builds in its lifespan."""

from typing import Annotated

from common.ratelimit import RateLimiter, client_ip
from fastapi import Depends, Request

from auth.settings import AuthSettings


def _settings(request: Request) -> AuthSettings:
    return request.app.state.settings


def _limiter(request: Request) -> RateLimiter:
    return request.app.state.limiter


def _ip(request: Request) -> str:
    return client_ip(request)


SettingsDep = Annotated[AuthSettings, Depends(_settings)]
LimiterDep = Annotated[RateLimiter, Depends(_limiter)]
ClientIpDep = Annotated[str, Depends(_ip)]
