from datetime import datetime
from typing import Annotated

from common.api import CamelModel, InputModel
from pydantic import Field, StrictInt, StringConstraints

MIN_TOPUP_MINOR = 100  # $1: below it card fees eat the payment
MAX_TOPUP_MINOR = 1_000_000_00  # $1,000,000


class TopupCreate(InputModel):
    """A top-up of `amount` minor units (cents); the balance grows once Stripe confirms it."""

    amount: StrictInt = Field(ge=MIN_TOPUP_MINOR, le=MAX_TOPUP_MINOR, examples=[2_000])
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_upper=True)] = "USD"


class TopupRead(CamelModel):
    """Confirm `clientSecret` with Stripe.js; the balance changes when Stripe reports success."""

    payment_id: str
    payment_intent_id: str
    client_secret: str
    amount: int
    currency: str
    status: str


class PaymentRead(CamelModel):
    """A top-up and what Stripe has reported about it. `refunded` is everything refunded to the
    card, of which `payoutRefunded` paid out your withdrawals; `credited` is what it adds to your
    balance now (amount, less your other refunds and disputes, once it succeeded: a withdrawal's
    payout shows as the withdrawal instead)."""

    payment_id: str
    payment_intent_id: str | None
    amount: int
    currency: str
    status: str
    succeeded: bool
    refunded: int
    payout_refunded: int
    disputed: int
    credited: int
    created_at: datetime
    updated_at: datetime
