"""Events published by the billing service, version 1."""

from __future__ import annotations

from common.contracts.base import Payload
from common.contracts.registry import event


@event("billing.account.opened.v1")
class AccountOpenedV1(Payload):
    account_id: str
    tenant_id: str
    currency: str
