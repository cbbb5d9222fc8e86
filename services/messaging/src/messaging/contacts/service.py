"""A tenant's contacts: CRUD, CSV export (streamed in keyset chunks) and CSV import (streamed,
upserted in batches, answered with a per-row report). Every query is scoped by the caller's
tenant; a contact of another tenant is indistinguishable from a missing one (404)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import phonenumbers
from common.auth import Principal
from common.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable
from common.ids import uuid7
from common.phones import to_e164
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from messaging.contacts.csvio import (
    Record,
    RecordReader,
    Utf8Decoder,
    escape_cell,
    unescape_cell,
    write_rows,
)
from messaging.contacts.repository import ContactFilter, ContactRepository, ImportRow
from messaging.contacts.schemas import (
    ContactCreate,
    ContactRead,
    ContactUpdate,
    ImportReport,
    RejectedRow,
)
from messaging.models import Contact

MAX_IMPORT_BYTES = 10 * 1024 * 1024  # the gateway's body limit too
MAX_IMPORT_ROWS = 100_000
IMPORT_BATCH = 500
MAX_LISTED_REJECTIONS = 1000
EXPORT_CHUNK = 1000
CSV_COLUMNS = ("name", "phone", "email", "tags", "notes")
# Header cells are compared lower-cased without spaces, '_' and '-': "Phone Number" is phone.
HEADER_ALIASES = {"phonenumber": "phone", **{c: c for c in CSV_COLUMNS}}


class ContactNotFound(NotFound):
    code, message = "CONTACT_NOT_FOUND", "No such contact"


class ContactExists(Conflict):
    code, message = "CONTACT_EXISTS", "A contact with this phone number already exists"


class ImportInProgress(Conflict):
    code, message = "IMPORT_IN_PROGRESS", "Another import into your contacts is running; try again when it ends"



def _read(contact: Contact) -> ContactRead:
    return ContactRead.model_validate(contact)


def normalise_filter(q: str | None, tag: str | None) -> ContactFilter:
    return ContactFilter(q=(q or "").strip() or None, tag=(tag or "").strip().lower() or None)


# ---- CRUD -------------------------------------------------------------------------------------


async def create(session: AsyncSession, principal: Principal, body: ContactCreate) -> ContactRead:
    tenant_id = principal.tenant_uuid
    phone = to_e164(body.phone)
    repo = ContactRepository(session)
    values = body.model_dump(exclude={"phone"}) | {"id": uuid7(), "tenant_id": tenant_id, "phone": phone}
    # Insert-or-nothing, then name the clash. Two rounds: the clashing contact may be deleted
    # between the two statements.
    for _ in range(2):
        contact = await repo.insert_if_absent(values)
        if contact is not None:
            return _read(contact)
        existing = await repo.id_by_phone(tenant_id, phone)
        if existing is not None:
            raise ContactExists(details={"id": str(existing), "phone": phone})
    raise ContactExists("The contact changed meanwhile; try again", details={"id": None, "phone": phone})


async def get(session: AsyncSession, principal: Principal, contact_id: uuid.UUID) -> ContactRead:
    contact = await ContactRepository(session).get(principal.tenant_uuid, contact_id)
    if contact is None:
        raise ContactNotFound()
    return _read(contact)


async def list_contacts(
    session: AsyncSession, principal: Principal, filters: ContactFilter, *, offset: int, limit: int
) -> tuple[list[ContactRead], int]:
    contacts, total = await ContactRepository(session).page(principal.tenant_uuid, filters, offset=offset, limit=limit)
    return [_read(c) for c in contacts], total


async def update(
    session: AsyncSession, principal: Principal, contact_id: uuid.UUID, body: ContactUpdate
) -> ContactRead:
    tenant_id = principal.tenant_uuid
    repo = ContactRepository(session)
    contact = await repo.get(tenant_id, contact_id, for_update=True)
    if contact is None:
        raise ContactNotFound()
    changes = body.model_dump(exclude_unset=True)
    if "phone" in changes:
        changes["phone"] = to_e164(changes["phone"])
        if changes["phone"] != contact.phone:
            existing = await repo.id_by_phone(tenant_id, changes["phone"])
            if existing is not None:
                raise ContactExists(details={"id": str(existing), "phone": changes["phone"]})
    if "tags" in changes and changes["tags"] is None:
        changes["tags"] = []
    for name, value in changes.items():
        setattr(contact, name, value)
    if not session.is_modified(contact):
        return _read(contact)
    try:
        await repo.save(contact)
    except IntegrityError as exc:
        phone = changes.get("phone")
        if phone is None:
            raise
        # The phone was taken between the check above and the flush.
        existing = await repo.id_by_phone(tenant_id, phone)
        raise ContactExists(details={"id": str(existing) if existing else None, "phone": phone}) from exc
    return _read(contact)


async def delete(session: AsyncSession, principal: Principal, contact_id: uuid.UUID) -> None:
    if not await ContactRepository(session).delete(principal.tenant_uuid, contact_id):
        raise ContactNotFound()


# ---- CSV export -------------------------------------------------------------------------------


def _export_row(row: Any) -> tuple[str, ...]:
    # The phone is always `+digits` (normalised on the way in), which a spreadsheet can at most
    # read as a number; escaping it would corrupt every number in the file.
    return (
        escape_cell(row.name),
        row.phone,
        escape_cell(row.email),
        escape_cell(";".join(row.tags)),
        escape_cell(row.notes),
    )


async def export_csv(
    session_factory: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, filters: ContactFilter
) -> AsyncIterator[bytes]:
    """The tenant's contacts as CSV, oldest first, `EXPORT_CHUNK` rows per query. Each chunk
    uses a short session of its own: the request's session is closed before the body streams,
    and a slow download must not hold a connection or a snapshot open."""
    yield write_rows([CSV_COLUMNS]).encode()
    after = None
    while True:
        async with session_factory() as session:
            rows = await ContactRepository(session).export_chunk(tenant_id, filters, after, EXPORT_CHUNK)
        if rows:
            yield write_rows(_export_row(r) for r in rows).encode()
        if len(rows) < EXPORT_CHUNK:
            return
        after = (rows[-1].created_at, rows[-1].id)


# ---- CSV import -------------------------------------------------------------------------------


def _reason(field: str | None, error_type: str) -> str:
    missing = error_type in ("missing", "string_too_short")
    too_long = error_type == "string_too_long"
    match field:
        case "name":
            return "MISSING_NAME" if missing else "NAME_TOO_LONG" if too_long else "INVALID_NAME"
        case "phone":
            return "MISSING_PHONE" if missing else "INVALID_PHONE"
        case "email":
            return "INVALID_EMAIL"
        case "tags":
            return "INVALID_TAGS"
        case "notes":
            return "NOTES_TOO_LONG" if too_long else "INVALID_NOTES"
    return "INVALID_ROW"


def _header(fields: list[str]) -> list[str | None]:
    """The column each header cell names; None for a blank cell (spreadsheets often write
    trailing empty columns), whose data cells are ignored."""
    canonical = [re.sub(r"[\s_\-]", "", f.strip().lower()) for f in fields]
    columns = [HEADER_ALIASES.get(c, "") if c else None for c in canonical]
    unknown = [f for f, c in zip(fields, columns, strict=True) if c == ""]
    allowed = {"required": ["name", "phone"], "optional": ["email", "tags", "notes"]}
    if unknown:
        raise Unprocessable(
            "The first row must be a header naming the columns: name, phone and optionally "
            "email, tags, notes",
            code="UNKNOWN_COLUMNS",
            details={"unknown": unknown[:20], **allowed},
        )
    named = [c for c in columns if c]
    duplicated = sorted({c for c in named if named.count(c) > 1})
    if duplicated:
        raise Unprocessable("A column is named twice", code="DUPLICATE_COLUMNS", details={"columns": duplicated})
    missing = [c for c in ("name", "phone") if c not in named]
    if missing:
        raise Unprocessable("The header lacks required columns", code="MISSING_COLUMNS", details={"missing": missing, **allowed})
    return columns


class _Importer:
    """Takes records one by one: the header, then data rows, validated like `POST /contacts`
    and upserted `IMPORT_BATCH` at a time. Nothing is held per row beyond the current batch."""

    def __init__(self, repo: ContactRepository, tenant_id: uuid.UUID, region: str | None) -> None:
        self.repo = repo
        self.tenant_id = tenant_id
        self.import_id = uuid.uuid4()
        self.region = region
        self.columns: list[str | None] | None = None
        self.update_columns: list[str] = []
        self.batch: dict[str, tuple[int, ImportRow]] = {}
        self.rows = self.created = self.updated = self.rejected = 0
        self.rejections: list[RejectedRow] = []

    def reject(self, row: int, reason: str, message: str, field: str | None = None) -> None:
        self.rejected += 1
        self.rejections.append(RejectedRow(row=row, reason=reason, field=field, message=message))
        if len(self.rejections) >= 2 * MAX_LISTED_REJECTIONS:
            # Rejections found at a batch's flush arrive a little out of order: keep the lowest rows.
            self.rejections.sort(key=lambda r: r.row)
            del self.rejections[MAX_LISTED_REJECTIONS:]

    async def take(self, record: Record) -> None:
        if record.fields is not None and not any(f.strip() for f in record.fields):
            return  # blank line (or only delimiters): skipped, not counted
        if self.columns is None:
            if record.fields is None:
                raise Unprocessable(f"The header row is not valid CSV: {record.error}", code="INVALID_HEADER")
            self.columns = _header(record.fields)
            self.update_columns = [c for c in ("name", "email", "tags", "notes") if c in self.columns]
            return
        self.rows += 1
        if self.rows > MAX_IMPORT_ROWS:
            raise PayloadTooLarge(
                f"At most {MAX_IMPORT_ROWS} rows per file; split it", code="TOO_MANY_ROWS",
                details={"maxRows": MAX_IMPORT_ROWS},
            )
        row = self._parse(record)
        if row is None:
            return
        first = self.batch.get(row.phone)
        if first is not None:
            self.reject(record.number, "DUPLICATE_IN_FILE", f"Row {first[0]} has the same phone number; the first row is kept", "phone")
            return
        self.batch[row.phone] = (record.number, row)
        if len(self.batch) >= IMPORT_BATCH:
            await self.flush()

    def _parse(self, record: Record) -> ImportRow | None:
        assert self.columns is not None
        if record.fields is None:
            self.reject(record.number, "MALFORMED_ROW", f"Not valid CSV: {record.error}")
            return None
        if len(record.fields) != len(self.columns):
            self.reject(
                record.number, "WRONG_COLUMN_COUNT",
                f"Expected {len(self.columns)} columns, found {len(record.fields)}",
            )
            return None
        values: dict[str, Any] = {
            c: unescape_cell(v) for c, v in zip(self.columns, record.fields, strict=True) if c
        }
        if "tags" in values:
            values["tags"] = [t for t in re.split(r"[;,]", values["tags"]) if t.strip()]
        try:
            body = ContactCreate.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error.get("loc") else None
            message = str(error.get("msg", "Invalid value")).removeprefix("Value error, ")
            self.reject(record.number, _reason(field, error.get("type", "")), message, field)
            return None
        try:
            phone = to_e164(body.phone, self.region)
        except Unprocessable as exc:
            self.reject(record.number, "INVALID_PHONE", exc.message, "phone")
            return None
        return ImportRow(id=uuid7(), name=body.name, phone=phone, email=body.email, tags=body.tags, notes=body.notes)

    async def flush(self) -> None:
        if not self.batch:
            return
        outcome = await self.repo.upsert_batch(self.tenant_id, self.import_id, [r for _, r in self.batch.values()], self.update_columns)
        for phone, (number, _) in self.batch.items():
            inserted = outcome.get(phone)
            if inserted is None:
                self.reject(number, "DUPLICATE_IN_FILE", "An earlier row has the same phone number; the first row is kept", "phone")
            elif inserted:
                self.created += 1
            else:
                self.updated += 1
        self.batch.clear()

    def report(self) -> ImportReport:
        self.rejections.sort(key=lambda r: r.row)
        return ImportReport(
            rows=self.rows, created=self.created, updated=self.updated, rejected=self.rejected,
            rejected_rows=self.rejections[:MAX_LISTED_REJECTIONS],
        )


def check_region(region: str | None) -> str | None:
    if region is None:
        return None
    region = region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise Unprocessable("Unknown region; use an ISO 3166 country code such as US", code="INVALID_REGION")
    return region


async def import_csv(
    session: AsyncSession, principal: Principal, chunks: AsyncIterator[bytes], *, region: str | None = None
) -> ImportReport:
    """Create or update contacts from CSV bytes as they arrive, in the request's transaction:
    a file refused part-way (too large, too many rows, not UTF-8) changes nothing.

    A row whose phone the tenant already has updates that contact (the columns the file has;
    an empty cell clears email, tags or notes). A phone repeated within the file: the first row
    is kept and the later ones are rejected as DUPLICATE_IN_FILE."""
    repo = ContactRepository(session)
    region = check_region(region)
    # Two imports of one tenant could lock the same contacts in opposite orders (a deadlock);
    # the second is refused instead of waiting for the first.
    if not await repo.try_lock_imports(principal.tenant_uuid):
        raise ImportInProgress()
    importer = _Importer(repo, principal.tenant_uuid, region)
    reader = RecordReader()
    decoder = Utf8Decoder()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise PayloadTooLarge(
                f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB; split it",
                code="FILE_TOO_LARGE", details={"maxBytes": MAX_IMPORT_BYTES},
            )
        for record in reader.feed(decoder.decode(chunk)):
            await importer.take(record)
    records: Sequence[Record] = reader.feed(decoder.decode(b"", final=True)) + reader.finish()
    for record in records:
        await importer.take(record)
    if importer.columns is None:
        raise Unprocessable("The file is empty; it needs a header row: name,phone[,email,tags,notes]", code="EMPTY_FILE")
    await importer.flush()
    return importer.report()
