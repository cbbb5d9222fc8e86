"""Contacts: a tenant's address book, one contact per phone number per tenant (issue 5).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "messaging"


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("email", sa.String(254)),
        sa.Column("tags", postgresql.ARRAY(sa.String(32)), nullable=False, server_default="{}"),
        sa.Column("notes", sa.String(1000)),
        sa.Column("last_import_id", sa.Uuid),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("tenant_id", "phone", name="uq_contacts_tenant_id_phone"),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
        sa.CheckConstraint("cardinality(tags) <= 20", name="tags_count"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_contacts_tenant_id_created_at_id", "contacts", ["tenant_id", "created_at", "id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("ix_contacts_tenant_id_created_at_id", table_name="contacts", schema=SCHEMA)
    op.drop_table("contacts", schema=SCHEMA)
