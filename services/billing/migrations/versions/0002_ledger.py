"""Double-entry ledger, holds, Stripe payments and raw events, idempotency keys, withdrawals,
pricing rules.

Invariants the database enforces (the code relies on them, it does not replace them):
- every transaction's entries sum to zero (deferred constraint trigger, checked at commit);
- entries are append-only (UPDATE/DELETE raise);
- a customer account's cached balance equals the sum of its entries (trigger, same txn);
- a customer account's available balance (balance - held) never goes below zero (CHECK);
- one business key, one transaction (UNIQUE).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "billing"


TRIGGERS = [
    f"""
        CREATE FUNCTION {S}.ledger_entry_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- Only customer balances are cached (and checked against overdraft). System accounts
            -- (revenue, clearing) are touched by every tenant's postings: a cached balance there
            -- would serialise the whole platform on one row, so theirs is the sum of entries.
            UPDATE {S}.accounts SET balance_minor = balance_minor + NEW.amount_minor
             WHERE id = NEW.account_id AND kind = 'customer'
            RETURNING balance_minor INTO NEW.balance_after_minor;
            RETURN NEW;
        END $$
    """,
    f"""
        CREATE TRIGGER ledger_entry_apply BEFORE INSERT ON {S}.ledger_entries
            FOR EACH ROW EXECUTE FUNCTION {S}.ledger_entry_apply()
    """,
    f"""
        CREATE FUNCTION {S}.ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger entries are append-only: post a reversing transaction instead';
        END $$
    """,
    f"""
        CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON {S}.ledger_entries
            FOR EACH ROW EXECUTE FUNCTION {S}.ledger_append_only()
    """,
    f"""
        CREATE TRIGGER ledger_tx_append_only BEFORE UPDATE OR DELETE ON {S}.ledger_transactions
            FOR EACH ROW EXECUTE FUNCTION {S}.ledger_append_only()
    """,
    f"""
        CREATE FUNCTION {S}.ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE total bigint;
        BEGIN
            SELECT coalesce(sum(amount_minor), 0) INTO total
              FROM {S}.ledger_entries WHERE transaction_id = NEW.transaction_id;
            IF total <> 0 THEN
                RAISE EXCEPTION 'ledger transaction % does not balance (sum %)', NEW.transaction_id, total;
            END IF;
            RETURN NULL;
        END $$
    """,
    f"""
        CREATE CONSTRAINT TRIGGER ledger_balanced AFTER INSERT ON {S}.ledger_entries
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {S}.ledger_balanced()
    """,
]


def upgrade() -> None:
    # accounts: customer accounts (one per tenant) and system accounts (stripe, revenue, ...).
    op.add_column("accounts", sa.Column("kind", sa.String(16), nullable=False, server_default="customer"), schema=S)
    op.add_column("accounts", sa.Column("code", sa.String(64), unique=True), schema=S)
    op.alter_column("accounts", "tenant_id", nullable=True, schema=S)
    op.execute(f"ALTER TABLE {S}.accounts DROP CONSTRAINT ck_accounts_available_non_negative")
    op.execute(
        f"ALTER TABLE {S}.accounts ADD CONSTRAINT ck_accounts_available_non_negative "
        "CHECK (kind <> 'customer' OR balance_minor - held_minor >= 0)"
    )
    op.execute(
        f"ALTER TABLE {S}.accounts ADD CONSTRAINT ck_accounts_kind_shape "
        "CHECK ((kind = 'customer' AND tenant_id IS NOT NULL) "
        "OR (kind = 'system' AND code IS NOT NULL AND held_minor = 0))"
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("business_key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("tenant_id", sa.String(64), index=True),
        sa.Column("description", sa.String(300), nullable=False),
        sa.Column("reference", sa.String(128)),
        sa.Column("details", JSONB, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "kind IN ('topup','sms','order','refund','dispute','withdrawal','adjustment','reversal')",
            name="kind_known",
        ),
        schema=S,
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.Uuid, sa.ForeignKey(f"{S}.ledger_transactions.id"), nullable=False, index=True),
        sa.Column("account_id", sa.Uuid, sa.ForeignKey(f"{S}.accounts.id"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("balance_after_minor", sa.BigInteger),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount_minor <> 0", name="non_zero"),
        schema=S,
    )
    op.create_index("ix_ledger_entries_account_created", "ledger_entries", ["account_id", "created_at"], schema=S)
    for statement in TRIGGERS:
        op.execute(statement)
    op.create_table(
        "holds",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, sa.ForeignKey(f"{S}.accounts.id"), nullable=False, index=True),
        sa.Column("business_key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("reference", sa.String(128)),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(12), nullable=False, server_default="held"),
        sa.Column("transaction_id", sa.Uuid, sa.ForeignKey(f"{S}.ledger_transactions.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("amount_minor > 0", name="positive"),
        sa.CheckConstraint("status IN ('held','captured','released')", name="status_known"),
        schema=S,
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("stripe_payment_intent_id", sa.String(100), unique=True),
        sa.Column("stripe_charge_id", sa.String(100)),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(24), nullable=False, server_default="requires_payment"),
        sa.Column("succeeded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("disputed_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("applied_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount_minor > 0", name="positive"),
        schema=S,
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        schema=S,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", JSONB),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(12), nullable=False, server_default="requested"),
        sa.Column("hold_id", sa.Uuid, sa.ForeignKey(f"{S}.holds.id"), nullable=False),
        sa.Column("payout_method", sa.String(24)),
        sa.Column("payout_reference", sa.String(100)),
        sa.Column("note", sa.String(500)),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount_minor > 0", name="positive"),
        sa.CheckConstraint("status IN ('requested','paid','rejected')", name="status_known"),
        schema=S,
    )
    op.create_table(
        "pricing_rules",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("country", sa.String(2)),
        sa.Column("route", sa.String(40)),
        sa.Column("provider", sa.String(40)),
        sa.Column("service", sa.String(60)),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("cost_minor", sa.BigInteger),
        sa.Column("margin_bp", sa.Integer),
        sa.Column("fixed_price_minor", sa.BigInteger),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('sms','order')", name="kind_known"),
        sa.CheckConstraint(
            "fixed_price_minor IS NOT NULL OR margin_bp IS NOT NULL", name="priced"
        ),
        sa.CheckConstraint("coalesce(fixed_price_minor, 0) >= 0 AND coalesce(margin_bp, 0) >= 0", name="non_negative"),
        schema=S,
    )
    op.create_index(
        "ux_pricing_rules_scope", "pricing_rules",
        ["kind", sa.text("coalesce(country,'')"), sa.text("coalesce(route,'')"),
         sa.text("coalesce(provider,'')"), sa.text("coalesce(service,'')")],
        unique=True, schema=S,
    )
    op.execute(f"""
        INSERT INTO {S}.accounts (id, kind, code, currency, balance_minor, held_minor)
        VALUES (gen_random_uuid(), 'system', 'stripe_clearing', 'USD', 0, 0),
               (gen_random_uuid(), 'system', 'revenue_sms', 'USD', 0, 0),
               (gen_random_uuid(), 'system', 'revenue_orders', 'USD', 0, 0),
               (gen_random_uuid(), 'system', 'payouts', 'USD', 0, 0),
               (gen_random_uuid(), 'system', 'adjustments', 'USD', 0, 0),
               (gen_random_uuid(), 'system', 'receivables', 'USD', 0, 0)
    """.strip())


def downgrade() -> None:
    for table in ("pricing_rules", "withdrawals", "idempotency_keys", "stripe_events", "payments", "holds"):
        op.drop_table(table, schema=S)
    op.execute(f"DROP TABLE {S}.ledger_entries")
    op.execute(f"DROP TABLE {S}.ledger_transactions")
    for fn in ("ledger_balanced", "ledger_append_only", "ledger_entry_apply"):
        op.execute(f"DROP FUNCTION {S}.{fn}()")
    op.execute(f"DELETE FROM {S}.accounts WHERE kind = 'system'")
    op.execute(f"ALTER TABLE {S}.accounts DROP CONSTRAINT ck_accounts_kind_shape")
    op.execute(f"ALTER TABLE {S}.accounts DROP CONSTRAINT ck_accounts_available_non_negative")
    op.execute(
        f"ALTER TABLE {S}.accounts ADD CONSTRAINT ck_accounts_available_non_negative "
        "CHECK (balance_minor - held_minor >= 0)"
    )
    op.alter_column("accounts", "tenant_id", nullable=False, schema=S)
    op.drop_column("accounts", "code", schema=S)
    op.drop_column("accounts", "kind", schema=S)
