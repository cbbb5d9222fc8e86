"""Money moves here only. Every movement is a balanced transaction with a business key (at most
one movement per key); holds reserve part of a customer's balance and are later captured
(a transaction to revenue) or released. The database enforces the invariants (see migration
0002); this module adds the business rules and the events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from common.contracts.billing.v1 import AccountOpenedV1, BalanceChangedV1
from common.errors import NotFound
from common.messaging import emit
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.ledger.repository import LedgerRepository
from billing.models import Account, Hold

Kind = Literal["topup", "sms", "order", "refund", "dispute", "withdrawal", "adjustment", "reversal"]
REVENUE = {"sms": "revenue_sms", "order": "revenue_orders", "withdrawal": "payouts"}


@dataclass(frozen=True)
class HoldOutcome:
    status: Literal["held", "insufficient_credits", "no_account"]
    hold: Hold | None = None
    account: Account | None = None
    already: bool = False  # the same business key had placed it before


async def open_account(session: AsyncSession, tenant_id: str, currency: str, event_id: str | None) -> Account | None:
    """Open the tenant's account and announce it; None when it was already open."""
    account = await LedgerRepository(session).open_customer(tenant_id, currency, event_id)
    if account is not None:
        await emit(
            session,
            AccountOpenedV1(account_id=str(account.id), tenant_id=tenant_id, currency=currency),
            subject=str(account.id),
            tenant_id=tenant_id,
        )
    return account


async def account_for(session: AsyncSession, tenant_id: str, currency: str, *, create: bool) -> Account | None:
    """The tenant's account; opened lazily when an event for an unknown tenant arrives first."""
    repo = LedgerRepository(session)
    account = await repo.customer(tenant_id)
    if account is None and create:
        await open_account(session, tenant_id, currency, None)
        account = await repo.customer(tenant_id)
    return account


async def post(
    session: AsyncSession,
    *,
    business_key: str,
    kind: Kind,
    tenant_id: str | None,
    description: str,
    postings: list[tuple[uuid.UUID, int]],
    reference: str | None = None,
    details: dict[str, Any] | None = None,
) -> uuid.UUID | None:
    """Post one balanced movement; None if this business key was already posted."""
    if sum(amount for _, amount in postings) != 0 or any(amount == 0 for _, amount in postings):
        raise ValueError("a movement's postings must be non-zero and sum to zero")
    repo = LedgerRepository(session)
    tx_id = await repo.insert_transaction(
        business_key=business_key, kind=kind, tenant_id=tenant_id, description=description[:300],
        reference=reference, details=details or {},
    )
    if tx_id is not None:
        await repo.insert_entries(tx_id, postings)
    return tx_id


async def credit(
    session: AsyncSession,
    account: Account,
    amount: int,
    *,
    business_key: str,
    kind: Kind,
    counter_account: str,
    description: str,
    reference: str | None = None,
) -> uuid.UUID | None:
    """Move `amount` (positive: to the customer; negative: from them) against a system account."""
    repo = LedgerRepository(session)
    system = await repo.system_account_id(counter_account)
    tx = await post(
        session, business_key=business_key, kind=kind, tenant_id=account.tenant_id,
        description=description, reference=reference, postings=[(account.id, amount), (system, -amount)],
    )
    if tx is not None:
        await balance_changed(session, account.id, kind)
    return tx


async def place_hold(
    session: AsyncSession,
    *,
    tenant_id: str,
    currency: str,
    business_key: str,
    kind: Kind,
    reference: str,
    amount: int,
) -> HoldOutcome:
    repo = LedgerRepository(session)
    existing = await repo.hold_by_key(business_key)
    if existing is not None:
        return HoldOutcome("held", existing, already=True)
    account = await account_for(session, tenant_id, currency, create=True)
    assert account is not None
    if not await repo.reserve(account.id, amount):
        return HoldOutcome("insufficient_credits", account=account)
    hold = Hold(account_id=account.id, business_key=business_key, kind=kind, reference=reference, amount_minor=amount)
    await repo.add_hold(hold)
    await balance_changed(session, account.id, f"hold:{kind}")
    return HoldOutcome("held", hold, account)


@dataclass(frozen=True)
class HoldRequest:
    tenant_id: str
    business_key: str
    kind: Kind
    reference: str
    amount: int


@dataclass(frozen=True)
class PlacedHold:
    status: Literal["held", "insufficient_credits"]
    hold_id: uuid.UUID | None
    currency: str


_EXISTING_HOLDS = text("SELECT business_key FROM holds WHERE business_key = ANY(CAST(:keys AS text[]))")
_LOCK_ACCOUNT = text("SELECT balance_minor, held_minor, currency FROM accounts WHERE id = :id FOR UPDATE")
_RAISE_HELD = text("UPDATE accounts SET held_minor = held_minor + :amount WHERE id = :id")
_INSERT_HOLDS = text(
    "INSERT INTO holds (id, account_id, business_key, kind, reference, amount_minor) "
    "SELECT u.id, :account, u.key, u.kind, u.ref, u.amount FROM unnest("
    "CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:refs AS text[]), "
    "CAST(:amounts AS bigint[])) AS u(id, key, kind, ref, amount)"
)


async def place_holds(
    session: AsyncSession, requests: list[HoldRequest], currency: str
) -> list[PlacedHold | None]:
    """Place many holds at once (a batch of hold events), in order: each one is held when the
    available balance left by the ones before it covers it, else refused; None for a business
    key that was placed before (answered then). A few statements per tenant, not per hold: one
    row lock on the account, one held-amount update, one multi-row insert, one balance event.
    Accounts are locked in a fixed order, so concurrent batches cannot deadlock."""
    outcomes: list[PlacedHold | None] = [None] * len(requests)
    if not requests:
        return outcomes
    rows = await session.execute(_EXISTING_HOLDS, {"keys": [r.business_key for r in requests]})
    seen = {row.business_key for row in rows}
    by_tenant: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        if request.amount <= 0:
            raise ValueError("a hold needs a positive amount")
        if request.business_key in seen:
            continue  # placed before, or twice in this batch: the first one answers
        seen.add(request.business_key)
        by_tenant.setdefault(request.tenant_id, []).append(i)
    for tenant_id in sorted(by_tenant):
        account = await account_for(session, tenant_id, currency, create=True)
        assert account is not None
        locked = (await session.execute(_LOCK_ACCOUNT, {"id": account.id})).one()
        available = locked.balance_minor - locked.held_minor
        taken: list[tuple[int, uuid.UUID]] = []
        for i in by_tenant[tenant_id]:
            amount = requests[i].amount
            if amount <= available:
                available -= amount
                hold_id = uuid.uuid4()
                taken.append((i, hold_id))
                outcomes[i] = PlacedHold("held", hold_id, locked.currency)
            else:
                outcomes[i] = PlacedHold("insufficient_credits", None, locked.currency)
        if not taken:
            continue
        total = sum(requests[i].amount for i, _ in taken)
        await session.execute(_RAISE_HELD, {"amount": total, "id": account.id})
        await session.execute(
            _INSERT_HOLDS,
            {
                "account": account.id,
                "ids": [hold_id for _, hold_id in taken],
                "keys": [requests[i].business_key for i, _ in taken],
                "kinds": [requests[i].kind for i, _ in taken],
                "refs": [requests[i].reference for i, _ in taken],
                "amounts": [requests[i].amount for i, _ in taken],
            },
        )
        kinds = sorted({requests[i].kind for i, _ in taken})
        await balance_changed(session, account.id, f"hold:{'+'.join(kinds)}")
    return outcomes


async def capture(session: AsyncSession, business_key: str, description: str, amount: int | None = None) -> bool:
    """Capture a held hold (all of it, or `amount` and release the rest). Idempotent."""
    repo = LedgerRepository(session)
    hold = await repo.settle_hold(business_key, "captured", datetime.now(UTC))
    if hold is None:
        return False
    take = hold.amount_minor if amount is None else max(0, min(amount, hold.amount_minor))
    await repo.unreserve(hold.account_id, hold.amount_minor)
    if take > 0:
        account = await repo.refreshed(hold.account_id)
        revenue = await repo.system_account_id(REVENUE.get(hold.kind, "adjustments"))
        tx = await post(
            session, business_key=f"capture:{business_key}", kind=hold.kind, tenant_id=account.tenant_id,
            description=description, reference=hold.reference,
            postings=[(hold.account_id, -take), (revenue, take)],
        )
        if tx is not None:
            await repo.link_hold(hold.id, tx)
    await balance_changed(session, hold.account_id, f"capture:{hold.kind}")
    return True


_SETTLE_MANY = text(
    "UPDATE holds h SET status = :status, settled_at = now() FROM accounts a "
    "WHERE h.business_key = ANY(CAST(:keys AS text[])) AND h.status = 'held' AND a.id = h.account_id "
    "RETURNING h.id, h.account_id, a.tenant_id, h.business_key, h.kind, h.reference, h.amount_minor"
)
_LOWER_HELD = text("UPDATE accounts SET held_minor = held_minor - :amount WHERE id = :id")
_INSERT_TRANSACTIONS = text(
    "INSERT INTO ledger_transactions (id, business_key, kind, tenant_id, description, reference) "
    "SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:kinds AS text[]), "
    "CAST(:tenants AS text[]), CAST(:descriptions AS text[]), CAST(:refs AS text[])) "
    "ON CONFLICT (business_key) DO NOTHING RETURNING id"
)
_INSERT_ENTRIES = text(
    "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor) "
    "SELECT * FROM unnest(CAST(:txs AS uuid[]), CAST(:accounts AS uuid[]), CAST(:amounts AS bigint[]))"
)
_LINK_HOLDS = text(
    "UPDATE holds h SET transaction_id = u.tx FROM unnest(CAST(:holds AS uuid[]), CAST(:txs AS uuid[])) "
    "AS u(hold, tx) WHERE h.id = u.hold"
)


async def settle_many(session: AsyncSession, business_keys: list[str], outcome: Literal["capture", "release"]) -> int:
    """Capture (whole) or release many holds at once, as `capture`/`release` do one by one: the
    holds still held among `business_keys` are settled, each account's held amount lowered
    once, each capture posted as its own balanced movement (`capture:<key>`) and linked to its
    hold, one balance event per account. Holds not held any more are skipped (idempotent).
    Returns how many were settled."""
    if not business_keys:
        return 0
    rows = (
        await session.execute(
            _SETTLE_MANY, {"keys": business_keys, "status": "captured" if outcome == "capture" else "released"}
        )
    ).all()
    if not rows:
        return 0
    per_account: dict[uuid.UUID, int] = {}
    for row in rows:
        per_account[row.account_id] = per_account.get(row.account_id, 0) + row.amount_minor
    # The customer accounts' rows are locked last, in account order (the held amount, lowered
    # before the entries' trigger lowers the balance, so the available balance never dips below
    # zero on the way), and stay locked until the commit: the tenant's holds wait for them.
    # What needs no account lock (the transactions, their links to the holds) is written first.
    posted: list[tuple[Any, uuid.UUID]] = []  # (settled hold, its capture's transaction)
    if outcome == "capture":
        repo = LedgerRepository(session)
        revenue: dict[str, uuid.UUID] = {}
        for kind in {row.kind for row in rows}:
            revenue[kind] = await repo.system_account_id(REVENUE.get(kind, "adjustments"))
        takes = [row for row in rows if row.amount_minor > 0]
        tx_ids = [uuid.uuid4() for _ in takes]
        inserted = set(
            (
                await session.execute(
                    _INSERT_TRANSACTIONS,
                    {
                        "ids": tx_ids,
                        "keys": [f"capture:{row.business_key}" for row in takes],
                        "kinds": [row.kind for row in takes],
                        "tenants": [row.tenant_id for row in takes],
                        "descriptions": [_capture_description(row.kind, row.reference) for row in takes],
                        "refs": [row.reference for row in takes],
                    },
                )
            ).scalars()
        )
        posted = sorted(
            ((row, tx) for row, tx in zip(takes, tx_ids, strict=True) if tx in inserted),
            key=lambda p: p[0].account_id,
        )
        if posted:
            await session.execute(
                _LINK_HOLDS, {"holds": [row.id for row, _ in posted], "txs": [tx for _, tx in posted]}
            )
    for account_id in sorted(per_account):
        await session.execute(_LOWER_HELD, {"amount": per_account[account_id], "id": account_id})
    if posted:
        await session.execute(
            _INSERT_ENTRIES,
            {
                "txs": [tx for _, tx in posted for _ in (0, 1)],
                "accounts": [a for row, _ in posted for a in (row.account_id, revenue[row.kind])],
                "amounts": [m for row, _ in posted for m in (-row.amount_minor, row.amount_minor)],
            },
        )
    kinds = "+".join(sorted({row.kind for row in rows}))
    for account_id in sorted(per_account):
        await balance_changed(session, account_id, f"{outcome}:{kinds}")
    return len(rows)


def _capture_description(kind: str, reference: str | None) -> str:
    label = {"sms": "SMS", "order": "Number order"}.get(kind, kind)
    return f"{label} {reference}"[:300]


async def still_held(session: AsyncSession, business_key: str) -> bool:
    """Whether the hold is held, row-locked until commit: nothing can capture or release it
    meanwhile. Locks only the hold (not the account), for callers that must take other row
    locks before the capture touches the account."""
    hold = await LedgerRepository(session).lock_hold(business_key)
    return hold is not None and hold.status == "held"


async def release(session: AsyncSession, business_key: str) -> bool:
    """Release a held hold; idempotent (False when it was not held)."""
    repo = LedgerRepository(session)
    hold = await repo.settle_hold(business_key, "released", datetime.now(UTC))
    if hold is None:
        return False
    await repo.unreserve(hold.account_id, hold.amount_minor)
    await balance_changed(session, hold.account_id, f"release:{hold.kind}")
    return True


async def require_account(session: AsyncSession, tenant_id: str) -> Account:
    account = await LedgerRepository(session).customer(tenant_id)
    if account is None:
        raise NotFound("No credit account yet", code="ACCOUNT_NOT_FOUND")
    return account


async def balance_changed(session: AsyncSession, account_id: uuid.UUID, reason: str) -> None:
    """Announce the account's balance after a movement (`post` alone does not)."""
    account = await LedgerRepository(session).refreshed(account_id)
    assert account.tenant_id is not None
    await emit(
        session,
        BalanceChangedV1(
            tenant_id=account.tenant_id, balance_minor=account.balance_minor, held_minor=account.held_minor,
            available_minor=account.balance_minor - account.held_minor, currency=account.currency, reason=reason,
        ),
        subject=account.tenant_id,
        tenant_id=account.tenant_id,
    )
