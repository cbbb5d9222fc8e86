"""A Hypothesis state machine drives random top-ups, holds, captures, releases, refunds and
withdrawals through the ledger service against the real database, and checks every invariant
after each step against a simple model (scoped to the machine's own account, so the check
costs its rows, not the whole dev database's ledger)."""

from __future__ import annotations

import asyncio
import uuid

from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.settings import BillingSettings
from common.db import create_engine, create_session_factory
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

amounts = st.integers(min_value=1, max_value=5_000)


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        config = BillingSettings(db_pool_size=2)
        self.engine = create_engine(config)
        self.sessions = create_session_factory(self.engine, config)
        self.tenant = f"prop-{uuid.uuid4()}"
        self.balance = 0
        self.held: dict[str, int] = {}
        self.seq = 0
        self.run(self._open())

    def run(self, coro):  # noqa: ANN001, ANN201
        return self.loop.run_until_complete(coro)

    def key(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}:{self.tenant}:{self.seq}"

    async def _open(self) -> None:
        async with self.sessions() as s, s.begin():
            self.account_id = (await ledger.account_for(s, self.tenant, "USD", create=True)).id

    async def _account(self, s):  # noqa: ANN001, ANN202
        return await LedgerRepository(s).customer(self.tenant)

    @rule(amount=amounts)
    def top_up(self, amount: int) -> None:
        async def go() -> None:
            async with self.sessions() as s, s.begin():
                await ledger.credit(s, await self._account(s), amount, business_key=self.key("topup"),
                                    kind="topup", counter_account="stripe_clearing", description="top-up")
        self.run(go())
        self.balance += amount

    @rule(target=holds, amount=amounts, kind=st.sampled_from(["sms", "order", "withdrawal"]))
    def hold(self, amount: int, kind: str) -> str:
        key = self.key(kind)

        async def go() -> str:
            async with self.sessions() as s, s.begin():
                outcome = await ledger.place_hold(s, tenant_id=self.tenant, currency="USD", business_key=key,
                                                  kind=kind, reference=key, amount=amount)
                return outcome.status
        status = self.run(go())
        available = self.balance - sum(self.held.values())
        assert (status == "held") == (amount <= available)
        if status == "held":
            self.held[key] = amount
        return key

    @rule(key=consumes(holds), fraction=st.sampled_from([None, 0.0, 0.5, 1.0]))
    def capture(self, key: str, fraction: float | None) -> None:
        amount = None if fraction is None or key not in self.held else int(self.held[key] * fraction)

        async def go() -> bool:
            async with self.sessions() as s, s.begin():
                return await ledger.capture(s, key, "capture", amount=amount)
        captured = self.run(go())
        assert captured == (key in self.held)
        if key in self.held:
            held = self.held.pop(key)
            self.balance -= held if amount is None else amount

    @rule(key=consumes(holds))
    def release(self, key: str) -> None:
        async def go() -> bool:
            async with self.sessions() as s, s.begin():
                return await ledger.release(s, key)
        assert self.run(go()) == (key in self.held)
        self.held.pop(key, None)

    @rule(amounts_=st.lists(amounts, min_size=1, max_size=6))
    def hold_batch(self, amounts_: list[int]) -> None:
        """The worker's path: a batch of SMS holds placed together, each if what is left fits it."""
        keys = [self.key("sms") for _ in amounts_]

        async def go() -> list[str]:
            requests = [
                ledger.HoldRequest(tenant_id=self.tenant, business_key=k, kind="sms", reference=k, amount=a)
                for k, a in zip(keys, amounts_, strict=True)
            ]
            async with self.sessions() as s, s.begin():
                return [o.status for o in await ledger.place_holds(s, requests, "USD")]
        statuses = self.run(go())
        available = self.balance - sum(self.held.values())
        for key, amount, status in zip(keys, amounts_, statuses, strict=True):
            assert (status == "held") == (amount <= available)
            if status == "held":
                available -= amount
                self.held[key] = amount

    @rule(data=st.data(), outcome=st.sampled_from(["capture", "release"]))
    def settle_batch(self, data: st.DataObject, outcome: str) -> None:
        """The worker's path for SMS outcomes: many holds settled at once, some already settled."""
        if not self.held:
            return
        keys = data.draw(st.lists(st.sampled_from(sorted(self.held)), min_size=1, max_size=6, unique=True))
        keys += [self.key("gone")]  # a key with no hold: skipped

        async def go() -> int:
            async with self.sessions() as s, s.begin():
                return await ledger.settle_many(s, keys, outcome)  # type: ignore[arg-type]
        assert self.run(go()) == len(keys) - 1
        for key in keys[:-1]:
            amount = self.held.pop(key)
            if outcome == "capture":
                self.balance -= amount

    @rule(amount=amounts)
    def refund(self, amount: int) -> None:
        """A refund takes credit back; the database refuses it when it would overdraw."""
        available = self.balance - sum(self.held.values())

        async def go() -> bool:
            try:
                async with self.sessions() as s, s.begin():
                    await ledger.credit(s, await self._account(s), -amount, business_key=self.key("refund"),
                                        kind="refund", counter_account="stripe_clearing", description="refund")
                return True
            except Exception as exc:  # noqa: BLE001
                assert "available_non_negative" in str(exc), exc
                return False
        done = self.run(go())
        assert done == (amount <= available)
        if done:
            self.balance -= amount

    @invariant()
    def books_balance(self) -> None:
        async def go():  # noqa: ANN202
            async with self.sessions() as s:
                account = await self._account(s)
                checks = await LedgerRepository(s).invariants(self.account_id)
                return account.balance_minor, account.held_minor, checks
        balance, held, checks = self.run(go())
        assert balance == self.balance
        assert held == sum(self.held.values())
        assert balance - held >= 0
        assert checks == {"ledger_sum": 0, "cache_mismatches": 0, "held_mismatches": 0, "negative_available": 0}

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()


TestLedgerProperties = LedgerMachine.TestCase
TestLedgerProperties.settings = settings(
    max_examples=15, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
