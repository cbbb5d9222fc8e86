"""Each service's migrations live in its own schema, version table included."""

import pytest

from tests.support import superuser

SCHEMAS = ["auth", "messaging", "chat", "media", "billing", "provider_sync"]


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_schema_owns_its_version_table_and_backbone_tables(schema):
    async with superuser() as conn:
        owner = await conn.fetchval(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", schema
        )
        assert owner == schema
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        }
        assert {"alembic_version", "outbox", "inbox"} <= tables
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".alembic_version') == 1
        assert await conn.fetchval("SELECT to_regclass('public.alembic_version')") is None


async def test_a_service_role_cannot_touch_another_services_schema():
    import asyncpg

    conn = await asyncpg.connect(
        "postgresql://chat:chat@127.0.0.1:55432/switchboard"
    )
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM billing.accounts LIMIT 1")
    finally:
        await conn.close()
