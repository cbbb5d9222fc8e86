"""Typed access to what the billing app builds in its lifespan."""

from typing import Annotated

from common.app import app_settings
from fastapi import Depends, Request

from billing.payments.stripe_gateway import StripeGateway
from billing.settings import BillingSettings


async def _stripe_gateway(request: Request) -> StripeGateway:
    return request.app.state.stripe_gateway


SettingsDep = Annotated[BillingSettings, Depends(app_settings)]
StripeGatewayDep = Annotated[StripeGateway, Depends(_stripe_gateway)]
