"""Events published by the billing service, version 1."""

from __future__ import annotations

from common.contracts.base import Payload
from common.contracts.registry import event


@event("billing.account.opened.v1")
class AccountOpenedV1(Payload):
    account_id: str
    tenant_id: str
    currency: str


@event("billing.credits.reserved.v1")
class CreditsReservedV1(Payload):
    """A hold covers the message or order: messaging may dispatch it."""

    reference: str
    reference_kind: str
    tenant_id: str
    hold_id: str
    amount_minor: int
    currency: str


@event("billing.credits.rejected.v1")
class CreditsRejectedV1(Payload):
    """No hold: `reason` is insufficient_credits or no_account."""

    reference: str
    reference_kind: str
    tenant_id: str
    reason: str
    amount_minor: int | None = None


@event("billing.balance.changed.v1")
class BalanceChangedV1(Payload):
    tenant_id: str
    balance_minor: int
    held_minor: int
    available_minor: int
    currency: str
    reason: str
