"""FastAPI dependencies shared by billing's feature modules."""

from typing import Annotated

from fastapi import Depends, Request

from billing.payments.stripe_gateway import StripeGateway


async def stripe_gateway(request: Request) -> StripeGateway:
    # Built on first use and kept for the app's life (one HTTP connection pool to Stripe).
    gateway = getattr(request.app.state, "stripe_gateway", None)
    if gateway is None:
        gateway = request.app.state.stripe_gateway = StripeGateway(request.app.state.settings)
    return gateway


StripeGatewayDep = Annotated[StripeGateway, Depends(stripe_gateway)]
