"""Withdrawal payouts by Stripe refund.

- payments.payout_refunded_minor: refunds *we* made to pay out withdrawals. They are part of
  refunded_minor (what Stripe has refunded on the charge) but left the customer's balance through
  the withdrawal's capture, so the webhook reconcile must not debit them again.
- withdrawals.rejection_reason: the reason had been packed into `note` behind a marker; moved out.
- withdrawals.payout_refunded_minor: how much of a paid withdrawal went back to cards (the rest
  was paid by hand); payout_reference widened for the joined refund ids.
- an index on payments(stripe_charge_id): charge events are matched on it.

One statement per op.execute: asyncpg refuses several in one.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "billing"


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column("payout_refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        schema=S,
    )
    op.execute(
        f"ALTER TABLE {S}.payments ADD CONSTRAINT ck_payments_payout_refund_bounded "
        "CHECK (payout_refunded_minor >= 0 AND payout_refunded_minor <= amount_minor)"
    )
    op.create_index("ix_billing_payments_stripe_charge_id", "payments", ["stripe_charge_id"], schema=S)

    op.add_column("withdrawals", sa.Column("rejection_reason", sa.String(500)), schema=S)
    op.add_column("withdrawals", sa.Column("payout_refunded_minor", sa.BigInteger), schema=S)
    op.alter_column("withdrawals", "payout_reference", type_=sa.String(500), schema=S)
    op.execute(f"UPDATE {S}.withdrawals SET payout_refunded_minor = 0 WHERE status = 'paid'")  # all manual so far
    # The old code kept "<note>\n[rejected] <reason>" and split at the *last* marker: the greedy
    # first group does the same (`.` matches newlines in PostgreSQL's regular expressions).
    op.execute(
        f"UPDATE {S}.withdrawals AS w SET note = nullif(p.m[1], ''), rejection_reason = p.m[2] "
        f"FROM (SELECT id, regexp_match(note, '^(.*)\\n\\[rejected\\] (.*)$') AS m FROM {S}.withdrawals "
        "WHERE status = 'rejected') AS p "
        "WHERE w.id = p.id AND p.m IS NOT NULL"
    )


def downgrade() -> None:
    op.execute(
        f"UPDATE {S}.withdrawals SET note = left(coalesce(note, '') || E'\\n[rejected] ' || rejection_reason, 500) "
        "WHERE rejection_reason IS NOT NULL"
    )
    op.execute(
        f"ALTER TABLE {S}.withdrawals ALTER COLUMN payout_reference TYPE varchar(100) "
        "USING left(payout_reference, 100)"
    )
    op.drop_column("withdrawals", "payout_refunded_minor", schema=S)
    op.drop_column("withdrawals", "rejection_reason", schema=S)
    op.drop_index("ix_billing_payments_stripe_charge_id", table_name="payments", schema=S)
    op.execute(f"ALTER TABLE {S}.payments DROP CONSTRAINT ck_payments_payout_refund_bounded")
    op.drop_column("payments", "payout_refunded_minor", schema=S)
