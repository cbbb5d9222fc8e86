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
        # The relay's purge finds published rows past their keep through this (see
        # purge_index_sql); rows get their entry when the relay marks them, never at the emit.
        Index(
            "ix_outbox_published",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
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
        Index("ix_inbox_received_at", "received_at"),  # the purge's, like ix_outbox_published
    )
    return outbox, inbox


def add_purge_indexes(op, schema: str) -> None:  # noqa: ANN001 - alembic's `op`
    """A service's migration adding the purge's indexes to its existing outbox and inbox, built
    CONCURRENTLY outside the migration's transaction (emits go on meanwhile)."""
    with op.get_context().autocommit_block():
        for statement in purge_index_sql(schema):
            op.execute(statement)


def drop_purge_indexes(op, schema: str) -> None:  # noqa: ANN001
    with op.get_context().autocommit_block():
        for statement in drop_purge_index_sql(schema):
            op.execute(statement)


def purge_index_sql(schema: str) -> list[str]:
    """The indexes the relay's purge reads, for the migration that adds them to an existing
    schema. Without them, each purge (every minute, in every service's worker) scanned the
    whole outbox and inbox to find nothing to delete: 1.7 s per pass on a 3.4 GB outbox.

    CONCURRENTLY, so building them on a big table does not block the emits meanwhile
    (`add_purge_indexes` runs them in the migration's `autocommit_block()`)."""
    return [
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_outbox_published ON "{schema}".outbox '
        "(published_at) WHERE published_at IS NOT NULL",
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_inbox_received_at ON "{schema}".inbox '
        "(received_at)",
    ]


def drop_purge_index_sql(schema: str) -> list[str]:
    return [
        f'DROP INDEX CONCURRENTLY IF EXISTS "{schema}".ix_outbox_published',
        f'DROP INDEX CONCURRENTLY IF EXISTS "{schema}".ix_inbox_received_at',
    ]


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
