import uuid
from datetime import datetime

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Account, Hold, LedgerEntry, LedgerTransaction


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- accounts ----------------------------------------------------------------------------

    async def system_account_id(self, code: str) -> uuid.UUID:
        account_id = await self.session.scalar(select(Account.id).where(Account.code == code))
        if account_id is None:
            raise RuntimeError(f"system account {code} missing: run the billing migrations")
        return account_id

    async def customer(self, tenant_id: str) -> Account | None:
        return await self.session.scalar(select(Account).where(Account.tenant_id == tenant_id))

    async def open_customer(self, tenant_id: str, currency: str, event_id: str | None) -> Account | None:
        """Open the tenant's account; None when it was already open."""
        return await self.session.scalar(
            pg_insert(Account)
            .values(kind="customer", tenant_id=tenant_id, currency=currency, opened_by_event=event_id)
            .on_conflict_do_nothing(index_elements=[Account.tenant_id])
            .returning(Account)
        )

    async def refreshed(self, account_id: uuid.UUID) -> Account:
        account = await self.session.get(Account, account_id, populate_existing=True)
        assert account is not None
        return account

    # -- postings ----------------------------------------------------------------------------

    async def insert_transaction(self, **values) -> uuid.UUID | None:
        """None when the business key was already posted (at most one movement per key)."""
        return await self.session.scalar(
            pg_insert(LedgerTransaction)
            .values(id=uuid.uuid4(), **values)
            .on_conflict_do_nothing(index_elements=[LedgerTransaction.business_key])
            .returning(LedgerTransaction.id)
        )

    async def insert_entries(self, transaction_id: uuid.UUID, postings: list[tuple[uuid.UUID, int]]) -> None:
        await self.session.execute(
            insert(LedgerEntry),
            [{"transaction_id": transaction_id, "account_id": a, "amount_minor": m} for a, m in postings],
        )

    # -- holds -------------------------------------------------------------------------------

    async def hold_by_key(self, business_key: str) -> Hold | None:
        return await self.session.scalar(select(Hold).where(Hold.business_key == business_key))

    async def lock_hold(self, business_key: str) -> Hold | None:
        return await self.session.scalar(
            select(Hold).where(Hold.business_key == business_key).with_for_update()
            .execution_options(populate_existing=True)
        )

    async def reserve(self, account_id: uuid.UUID, amount: int) -> bool:
        """Raise the held amount if the available balance covers it (atomic, row-locked)."""
        row = await self.session.scalar(
            update(Account)
            .where(Account.id == account_id, Account.balance_minor - Account.held_minor >= amount)
            .values(held_minor=Account.held_minor + amount)
            .returning(Account.id)
        )
        return row is not None

    async def unreserve(self, account_id: uuid.UUID, amount: int) -> None:
        await self.session.execute(
            update(Account).where(Account.id == account_id).values(held_minor=Account.held_minor - amount)
        )

    async def add_hold(self, hold: Hold) -> None:
        self.session.add(hold)
        await self.session.flush()

    async def settle_hold(self, business_key: str, status: str, at: datetime) -> Hold | None:
        """Move a held hold to captured/released; None if it is not held (already settled)."""
        return await self.session.scalar(
            update(Hold)
            .where(Hold.business_key == business_key, Hold.status == "held")
            .values(status=status, settled_at=at)
            .returning(Hold)
            .execution_options(synchronize_session=False)
        )

    async def link_hold(self, hold_id: uuid.UUID, transaction_id: uuid.UUID) -> None:
        await self.session.execute(update(Hold).where(Hold.id == hold_id).values(transaction_id=transaction_id))

    # -- reads -------------------------------------------------------------------------------

    async def history(
        self, account_id: uuid.UUID, *, start: datetime | None, end: datetime | None, offset: int, limit: int
    ) -> tuple[list[tuple[LedgerEntry, LedgerTransaction]], int]:
        stmt = (
            select(LedgerEntry, LedgerTransaction)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerEntry.account_id == account_id)
        )
        if start is not None:
            stmt = stmt.where(LedgerEntry.created_at >= start)
        if end is not None:
            stmt = stmt.where(LedgerEntry.created_at < end)
        total = await self.session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = await self.session.execute(
            stmt.order_by(LedgerEntry.id.desc()).offset(offset).limit(limit)
        )
        return [(e, t) for e, t in rows.all()], int(total or 0)

    async def invariants(self, account_id: uuid.UUID | None = None) -> dict[str, int]:
        """Numbers that must all be zero (used by tests and the admin health view). With
        `account_id`, only that account is checked, and the ledger sum is over the transactions
        that touched it (each balances on its own), so the check costs that account's rows, not
        the whole ledger's."""
        row = (
            await self.session.execute(
                text(
                    """
                    WITH scope AS (
                      SELECT id, balance_minor, held_minor FROM accounts
                       WHERE kind = 'customer' AND (CAST(:account AS uuid) IS NULL OR id = :account)
                    ), entries AS (
                      SELECT e.account_id, sum(e.amount_minor) AS total FROM ledger_entries e
                       WHERE CAST(:account AS uuid) IS NULL OR e.account_id = :account
                       GROUP BY e.account_id
                    ), held AS (
                      SELECT h.account_id, sum(h.amount_minor) AS total FROM holds h
                       WHERE h.status = 'held' AND (CAST(:account AS uuid) IS NULL OR h.account_id = :account)
                       GROUP BY h.account_id
                    )
                    SELECT
                      (SELECT coalesce(sum(e.amount_minor), 0) FROM ledger_entries e
                        WHERE CAST(:account AS uuid) IS NULL OR e.transaction_id IN
                          (SELECT transaction_id FROM ledger_entries WHERE account_id = :account)) AS ledger_sum,
                      count(*) FILTER (WHERE a.balance_minor <> coalesce(e.total, 0)) AS cache_mismatches,
                      count(*) FILTER (WHERE a.held_minor <> coalesce(h.total, 0)) AS held_mismatches,
                      count(*) FILTER (WHERE a.balance_minor - a.held_minor < 0) AS negative_available
                    FROM scope a
                    LEFT JOIN entries e ON e.account_id = a.id
                    LEFT JOIN held h ON h.account_id = a.id
                    """
                ),
                {"account": account_id},
            )
        ).one()
        return {k: int(v) for k, v in row._mapping.items()}
