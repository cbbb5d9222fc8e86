"""Outbox and inbox tables, added to every service's MetaData (so Alembic sees them)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB


def add_backbone_tables(metadata: MetaData) -> tuple[Table, Table]:
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", String(128), nullable=False, unique=True),
        Column("event_type", String(128), nullable=False),
        Column("topic", String(128), nullable=False),
        Column("key", String(256), nullable=False),
        Column("envelope", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text),
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer_group", String(128), nullable=False),
        Column("event_id", String(128), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("outcome", String(16), nullable=False, server_default="handled"),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer_group", "event_id", name="pk_inbox"),
    )
    return outbox, inbox


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


def create_notify_trigger_sql(schema: str) -> list[str]:
    """A statement-level trigger: every commit that added outbox rows wakes the relay."""
    channel = notify_channel(schema)
    return [
        f"""
        CREATE OR REPLACE FUNCTION "{schema}".outbox_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{channel}', '');
            RETURN NULL;
        END $$
        """,
        f'DROP TRIGGER IF EXISTS outbox_notify ON "{schema}".outbox',
        f"""
        CREATE TRIGGER outbox_notify AFTER INSERT ON "{schema}".outbox
        FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".outbox_notify()
        """,
    ]


def drop_notify_trigger_sql(schema: str) -> list[str]:
    return [
        f'DROP TRIGGER IF EXISTS outbox_notify ON "{schema}".outbox',
        f'DROP FUNCTION IF EXISTS "{schema}".outbox_notify()',
    ]


def create_backbone_tables(connection, schema: str) -> None:  # noqa: ANN001
    """For a service's first migration: the outbox, the inbox and the NOTIFY trigger."""
    from common.db.base import NAMING_CONVENTION

    metadata = MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
    add_backbone_tables(metadata)
    metadata.create_all(connection)
    for statement in create_notify_trigger_sql(schema):
        connection.exec_driver_sql(statement)


def drop_backbone_tables(connection, schema: str) -> None:  # noqa: ANN001
    for statement in drop_notify_trigger_sql(schema):
        connection.exec_driver_sql(statement)
    metadata = MetaData(schema=schema)
    add_backbone_tables(metadata)
    metadata.drop_all(connection)
