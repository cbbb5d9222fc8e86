"""The ledger against the real billing schema: what the database refuses, and holds under
real concurrency. Each test uses a fresh tenant, committed like production data."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.settings import BillingSettings
from sqlalchemy import text

from tests.support import sessions_fixture

SETTINGS = BillingSettings(db_pool_size=20)


sessions = sessions_fixture(lambda: SETTINGS)


async def funded_tenant(sessions, amount: int) -> str:  # noqa: ANN001
    tenant = f"test-{uuid.uuid4()}"
    async with sessions() as s, s.begin():
        account = await ledger.account_for(s, tenant, "USD", create=True)
        if amount:
            await ledger.credit(s, account, amount, business_key=f"fund:{tenant}", kind="adjustment",
                                counter_account="adjustments", description="test funding")
    return tenant


async def balance(sessions, tenant: str) -> tuple[int, int]:  # noqa: ANN001
    async with sessions() as s:
        account = await LedgerRepository(s).customer(tenant)
        return account.balance_minor, account.held_minor


async def billing_conn() -> asyncpg.Connection:
    return await asyncpg.connect("postgresql://billing:billing@127.0.0.1:55432/switchboard")


async def test_the_database_refuses_edits_unbalanced_movements_and_overdrafts(sessions):
    tenant = await funded_tenant(sessions, 1_000)
    conn = await billing_conn()
    try:
        await conn.execute("SET search_path = billing")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE ledger_entries SET amount_minor = amount_minor * 2")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM ledger_entries")
        account = await conn.fetchval("SELECT id FROM accounts WHERE tenant_id = $1", tenant)
        with pytest.raises(asyncpg.RaiseError, match="does not balance"):
            async with conn.transaction():
                tx = await conn.fetchval(
                    "INSERT INTO ledger_transactions (id, business_key, kind, description) "
                    "VALUES (gen_random_uuid(), $1, 'adjustment', 'x') RETURNING id", f"bad:{tenant}")
                await conn.execute(
                    "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor) VALUES ($1, $2, 500)",
                    tx, account)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE accounts SET held_minor = 1001 WHERE id = $1", account)
    finally:
        await conn.close()
    assert await balance(sessions, tenant) == (1_000, 0)


async def test_one_business_key_moves_money_once(sessions):
    tenant = await funded_tenant(sessions, 0)
    async def pay() -> object:
        async with sessions() as s, s.begin():
            account = await ledger.account_for(s, tenant, "USD", create=False)
            return await ledger.credit(s, account, 700, business_key=f"same:{tenant}", kind="topup",
                                       counter_account="stripe_clearing", description="top-up")
    results = await asyncio.gather(*(pay() for _ in range(10)), return_exceptions=True)
    assert sum(isinstance(r, uuid.UUID) for r in results) == 1
    assert await balance(sessions, tenant) == (700, 0)


async def test_200_concurrent_holds_on_a_balance_for_100_place_exactly_100(sessions):
    tenant = await funded_tenant(sessions, 100 * 7)

    async def hold(i: int) -> str:
        async with sessions() as s, s.begin():
            outcome = await ledger.place_hold(s, tenant_id=tenant, currency="USD", business_key=f"sms:{tenant}:{i}",
                                              kind="sms", reference=str(i), amount=7)
            return outcome.status

    statuses = await asyncio.gather(*(hold(i) for i in range(200)))
    assert statuses.count("held") == 100 and statuses.count("insufficient_credits") == 100
    assert await balance(sessions, tenant) == (700, 700)
    async with sessions() as s:
        checks = await LedgerRepository(s).invariants()
    assert checks["ledger_sum"] == 0 and checks["negative_available"] == 0
    assert checks["cache_mismatches"] == 0 and checks["held_mismatches"] == 0


async def test_capture_and_release_are_idempotent_and_partial_capture_releases_the_rest(sessions):
    tenant = await funded_tenant(sessions, 100)
    async with sessions() as s, s.begin():
        await ledger.place_hold(s, tenant_id=tenant, currency="USD", business_key=f"o:{tenant}", kind="order",
                                reference="o", amount=60)
    for _ in range(3):
        async with sessions() as s, s.begin():
            await ledger.capture(s, f"o:{tenant}", "order", amount=45)
    async with sessions() as s, s.begin():
        assert await ledger.release(s, f"o:{tenant}") is False  # already settled
    assert await balance(sessions, tenant) == (55, 0)


async def test_batches_of_holds_placed_concurrently_never_exceed_the_balance(sessions):
    """The worker's path: holds arrive in batches (one per partition), several at once."""
    tenant = await funded_tenant(sessions, 100 * 7)

    async def batch(b: int) -> list[tuple[str, str]]:
        requests = [
            ledger.HoldRequest(tenant_id=tenant, business_key=f"sms:{tenant}:{b}:{i}", kind="sms",
                               reference=f"{b}:{i}", amount=7)
            for i in range(10)
        ]
        async with sessions() as s, s.begin():
            placed = await ledger.place_holds(s, requests, "USD")
        return [(r.business_key, o.status) for r, o in zip(requests, placed, strict=True)]

    outcomes = [o for batch_outcomes in await asyncio.gather(*(batch(b) for b in range(20))) for o in batch_outcomes]
    statuses = [status for _, status in outcomes]
    assert statuses.count("held") == 100 and statuses.count("insufficient_credits") == 100
    assert await balance(sessions, tenant) == (700, 700)
    # A repeated business key of a placed hold (a redelivered request) places nothing, answers nothing.
    held_key = next(key for key, status in outcomes if status == "held")
    again = [ledger.HoldRequest(tenant_id=tenant, business_key=held_key, kind="sms", reference="again", amount=7)]
    async with sessions() as s, s.begin():
        assert await ledger.place_holds(s, again, "USD") == [None]
    async with sessions() as s:
        checks = await LedgerRepository(s).invariants()
    assert checks == {**checks, "ledger_sum": 0, "negative_available": 0, "cache_mismatches": 0, "held_mismatches": 0}


async def test_a_batch_holds_what_fits_in_order_and_settles_many_at_once(sessions):
    tenant = await funded_tenant(sessions, 20)
    amounts = [8, 8, 8, 4]  # the third does not fit after two; the fourth still does
    requests = [
        ledger.HoldRequest(tenant_id=tenant, business_key=f"sms:{tenant}:{i}", kind="sms", reference=str(i), amount=a)
        for i, a in enumerate(amounts)
    ]
    async with sessions() as s, s.begin():
        outcomes = await ledger.place_holds(s, requests, "USD")
    assert [o.status for o in outcomes] == ["held", "held", "insufficient_credits", "held"]
    assert await balance(sessions, tenant) == (20, 20)
    keys = [r.business_key for r in requests]
    for _ in range(2):  # a redelivered batch settles nothing twice
        async with sessions() as s, s.begin():
            await ledger.settle_many(s, [keys[0], keys[1]], "capture")
    async with sessions() as s, s.begin():
        assert await ledger.settle_many(s, [keys[1], keys[3]], "release") == 1  # keys[1] was captured
    assert await balance(sessions, tenant) == (4, 0)
    async with sessions() as s:
        repo = LedgerRepository(s)
        checks = await repo.invariants()
    assert checks["ledger_sum"] == 0 and checks["cache_mismatches"] == 0 and checks["held_mismatches"] == 0
    conn = await billing_conn()
    try:
        posted = await conn.fetch(
            "SELECT t.business_key, sum(e.amount_minor) AS total, count(*) AS n FROM billing.ledger_transactions t "
            "JOIN billing.ledger_entries e ON e.transaction_id = t.id WHERE t.business_key = ANY($1::text[]) "
            "GROUP BY t.business_key", [f"capture:{k}" for k in keys],
        )
        linked = await conn.fetchval(
            "SELECT count(*) FROM billing.holds WHERE business_key = ANY($1::text[]) AND transaction_id IS NOT NULL",
            keys,
        )
    finally:
        await conn.close()
    assert sorted((r["business_key"], r["total"], r["n"]) for r in posted) == [
        (f"capture:{keys[0]}", 0, 2), (f"capture:{keys[1]}", 0, 2)
    ]
    assert linked == 2


async def test_the_invariants_catch_a_tampered_balance_cache_for_one_account_and_overall(sessions):
    tenant = await funded_tenant(sessions, 500)
    other = await funded_tenant(sessions, 70)
    async with sessions() as s:
        repo = LedgerRepository(s)
        account = await repo.customer(tenant)
        others = await repo.customer(other)
        assert await repo.invariants(account.id) == {
            "ledger_sum": 0, "cache_mismatches": 0, "held_mismatches": 0, "negative_available": 0,
        }
    async with sessions() as s, s.begin():  # rolled back: nothing stays tampered
        await s.execute(
            text("UPDATE accounts SET balance_minor = balance_minor + 1, held_minor = held_minor + 1 WHERE id = :a"),
            {"a": account.id},
        )
        repo = LedgerRepository(s)
        scoped = await repo.invariants(account.id)
        overall = await repo.invariants()
        untouched = await repo.invariants(others.id)
        await s.rollback()
    assert scoped == {"ledger_sum": 0, "cache_mismatches": 1, "held_mismatches": 1, "negative_available": 0}
    assert overall["cache_mismatches"] >= 1 and overall["held_mismatches"] >= 1
    assert untouched == {"ledger_sum": 0, "cache_mismatches": 0, "held_mismatches": 0, "negative_available": 0}
