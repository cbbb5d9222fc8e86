"""Every contacts query, each one scoped by the tenant."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.models import Contact

# Characters that may appear in a typed phone number; a query made only of these (and at least
# one digit) is also matched against the stored numbers' digits.
_PHONEISH = re.compile(r"^[\d\s+().\-/]+$")

UPDATABLE = frozenset({"name", "email", "tags", "notes"})
EXPORT_COLUMNS = (Contact.name, Contact.phone, Contact.email, Contact.tags, Contact.notes)


@dataclass(frozen=True)
class ContactFilter:
    q: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class ImportRow:
    id: uuid.UUID
    name: str
    phone: str
    email: str | None
    tags: list[str]
    notes: str | None


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(stmt: Select[Any], tenant_id: uuid.UUID, filters: ContactFilter) -> Select[Any]:
    stmt = stmt.where(Contact.tenant_id == tenant_id)
    if filters.q:
        matches = [Contact.name.ilike(f"%{_like_escape(filters.q)}%", escape="\\")]
        digits = re.sub(r"\D", "", filters.q)
        if digits and _PHONEISH.match(filters.q):
            matches.append(Contact.phone.contains(digits, autoescape=True))
        stmt = stmt.where(or_(*matches))
    if filters.tag:
        stmt = stmt.where(Contact.tags.contains([filters.tag]))
    return stmt


class ContactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_if_absent(self, values: dict[str, Any]) -> Contact | None:
        """The new contact, or None when the tenant already has one with that phone."""
        stmt = (
            pg_insert(Contact)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[Contact.tenant_id, Contact.phone])
            .returning(Contact)
        )
        return await self.session.scalar(stmt)

    async def id_by_phone(self, tenant_id: uuid.UUID, phone: str) -> uuid.UUID | None:
        return await self.session.scalar(
            select(Contact.id).where(Contact.tenant_id == tenant_id, Contact.phone == phone)
        )

    async def get(self, tenant_id: uuid.UUID, contact_id: uuid.UUID, *, for_update: bool = False) -> Contact | None:
        stmt = select(Contact).where(Contact.tenant_id == tenant_id, Contact.id == contact_id)
        if for_update:
            stmt = stmt.with_for_update()
        return await self.session.scalar(stmt)

    async def save(self, contact: Contact) -> Contact:
        """Flush the changes (in a savepoint, so a unique violation leaves the session usable)
        and read back the server-set `updated_at`."""
        async with self.session.begin_nested():
            await self.session.flush()
        await self.session.refresh(contact)
        return contact

    async def delete(self, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> bool:
        deleted = await self.session.scalar(
            delete(Contact)
            .where(Contact.tenant_id == tenant_id, Contact.id == contact_id)
            .returning(Contact.id)
        )
        return deleted is not None

    async def page(
        self, tenant_id: uuid.UUID, filters: ContactFilter, *, offset: int, limit: int
    ) -> tuple[list[Contact], int]:
        """Newest first (id breaks ties: UUIDv7, so an import lists its last row first)."""
        total = await self.session.scalar(_filtered(select(func.count()).select_from(Contact), tenant_id, filters))
        rows = await self.session.scalars(
            _filtered(select(Contact), tenant_id, filters)
            .order_by(Contact.created_at.desc(), Contact.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return list(rows), int(total or 0)

    async def export_chunk(
        self,
        tenant_id: uuid.UUID,
        filters: ContactFilter,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> Sequence[Any]:
        """The next `limit` rows in creation order after `after` (keyset: no OFFSET scan, and
        no cursor held open while a slow client downloads)."""
        stmt = _filtered(select(*EXPORT_COLUMNS, Contact.created_at, Contact.id), tenant_id, filters)
        if after is not None:
            stmt = stmt.where(tuple_(Contact.created_at, Contact.id) > tuple_(*after))
        rows = await self.session.execute(stmt.order_by(Contact.created_at, Contact.id).limit(limit))
        return rows.all()

    async def try_lock_imports(self, tenant_id: uuid.UUID) -> bool:
        """Take the tenant's import lock until the transaction ends, if it is free."""
        return bool(
            await self.session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext('messaging.contacts.import'), hashtext(:t))"),
                {"t": str(tenant_id)},
            )
        )

    async def upsert_batch(
        self,
        tenant_id: uuid.UUID,
        import_id: uuid.UUID,
        rows: Sequence[ImportRow],
        update_columns: Sequence[str],
    ) -> dict[str, bool]:
        """Insert the rows, or update the tenant's contacts with the same phones (only
        `update_columns`, the columns the file has). Answers phone -> True if inserted, False if
        updated. A contact this import has already written (an earlier batch had its phone) is
        left alone and absent from the answer: the file repeats a phone, and its first row wins.
        The rows of one call must have distinct phones."""
        assert set(update_columns) <= UPDATABLE, update_columns  # interpolated below: a whitelist
        assignments = "".join(f"{c} = EXCLUDED.{c}, " for c in update_columns)
        stmt = text(
            f"""
            INSERT INTO contacts AS c (id, tenant_id, name, phone, email, tags, notes, last_import_id)
            SELECT r.id, CAST(:tenant_id AS uuid), r.name, r.phone, r.email,
                   string_to_array(r.tags, ';'), r.notes, CAST(:import_id AS uuid)
            FROM unnest(CAST(:ids AS uuid[]), CAST(:names AS text[]), CAST(:phones AS text[]),
                        CAST(:emails AS text[]), CAST(:tags AS text[]), CAST(:notes AS text[]))
                 AS r(id, name, phone, email, tags, notes)
            ON CONFLICT (tenant_id, phone) DO UPDATE
            SET {assignments}last_import_id = EXCLUDED.last_import_id, updated_at = now()
            WHERE c.last_import_id IS DISTINCT FROM EXCLUDED.last_import_id
            RETURNING c.phone, (c.xmax = 0) AS inserted
            """
        )
        result = await self.session.execute(
            stmt,
            {
                "tenant_id": tenant_id,
                "import_id": import_id,
                "ids": [r.id for r in rows],
                "names": [r.name for r in rows],
                "phones": [r.phone for r in rows],
                "emails": [r.email for r in rows],
                # Tags never contain ';' (the schema forbids it), so one string per row carries them.
                "tags": [";".join(r.tags) for r in rows],
                "notes": [r.notes for r in rows],
            },
        )
        return {phone: inserted for phone, inserted in result.all()}
