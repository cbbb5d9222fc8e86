"""Shared Alembic environment: every service's migrations/env.py calls run_migrations()."""

from __future__ import annotations

import asyncio

from sqlalchemy import MetaData, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from common.settings import BaseServiceSettings


def run_migrations(metadata: MetaData, settings: BaseServiceSettings) -> None:
    """Run Alembic online against the service schema; the version table lives in that schema."""
    from alembic import context

    schema = settings.db_schema

    def include_name(name, type_, parent_names):  # noqa: ANN001
        # Reflect only our schema: service roles may not even look into the others.
        if type_ == "schema":
            return name == schema
        return True

    def include_object(obj, name, type_, reflected, compare_to):  # noqa: ANN001
        # Never let autogenerate propose touching another service's schema.
        if type_ == "table":
            return obj.schema == schema
        return True

    def do_run(connection) -> None:  # noqa: ANN001
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_object=include_object,
            include_name=include_name,
        )
        with context.begin_transaction():
            # Inside the transaction: before it, the async template silently rolls back.
            # Checked first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when
            # the schema exists, and service roles only own their schema (devstack creates it).
            exists = connection.execute(
                text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
            ).scalar()
            if not exists:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(settings.database_url, poolclass=pool.NullPool)
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    asyncio.run(main())
