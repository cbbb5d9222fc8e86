"""Billing API process: `uvicorn billing.app:create_app --factory`."""

from common.app import create_service_app
from fastapi import FastAPI

from billing.accounts.endpoints import router as accounts_router
from billing.ledger.endpoints import router as ledger_router
from billing.payments.endpoints import router as payments_router  # issue 4: Stripe top-ups
from billing.pricing.endpoints import router as pricing_router
from billing.settings import BillingSettings
from billing.withdrawals.endpoints import router as withdrawals_router


def create_app(settings: BillingSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or BillingSettings(),
        title="Switchboard billing",
        description="Credits ledger, top-ups, holds, withdrawals and pricing.",
        routers=[accounts_router, ledger_router, withdrawals_router, pricing_router,
                 payments_router],  # payments_router: issue 4, Stripe top-ups
    )
