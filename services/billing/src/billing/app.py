"""Billing API process: `uvicorn billing.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from billing.accounts.endpoints import router as accounts_router
from billing.ledger.endpoints import router as ledger_router
from billing.payments.endpoints import router as payments_router
from billing.payments.stripe_gateway import StripeGateway
from billing.pricing.endpoints import router as pricing_router
from billing.settings import BillingSettings
from billing.withdrawals.endpoints import router as withdrawals_router


async def _startup(app: FastAPI) -> StripeGateway:
    # One connection pool to Stripe for the app's life, closed with it (the lifespan exits it).
    app.state.stripe_gateway = StripeGateway(app.state.settings)
    return app.state.stripe_gateway


def create_app(settings: BillingSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or BillingSettings(),
        title="Switchboard billing",
        description="Credits ledger, top-ups, holds, withdrawals and pricing.",
        routers=[accounts_router, ledger_router, withdrawals_router, pricing_router, payments_router],
        on_startup=[_startup],
    )
