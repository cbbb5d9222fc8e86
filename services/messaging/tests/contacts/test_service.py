"""Contacts service against the real messaging schema, each test in a transaction rolled back:
import upsert semantics, duplicates within a file (also across batches), limits, the report."""

from __future__ import annotations

import uuid

import pytest
from common.auth import Principal
from common.errors import AppError
from messaging.contacts import service
from messaging.contacts.schemas import ContactCreate, ContactUpdate
from messaging.settings import MessagingSettings

from tests.support import rollback_session

SETTINGS = MessagingSettings()


def tenant() -> Principal:
    return Principal(user_id=str(uuid.uuid4()), tenant_id=str(uuid.uuid4()), roles=("OWNER",))


async def pieces(text: str, size: int = 7):
    data = text.encode()
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def run_import(session, who: Principal, text: str, **kwargs):
    return await service.import_csv(session, who, pieces(text), **kwargs)


async def all_contacts(session, who: Principal) -> dict[str, object]:
    items, _ = await service.list_contacts(session, who, service.normalise_filter(None, None), offset=0, limit=100)
    return {c.phone: c for c in items}


async def test_an_import_updates_existing_contacts_only_in_the_columns_it_has():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        await service.create(session, who, ContactCreate(
            name="Ann", phone="+14155552671", email="ann@example.com", tags=["old"], notes="keep me"))
        report = await run_import(session, who, "name,phone,email\nAnn B,+1 415 555 2671,\nCy,+14155552672,cy@example.com\n")
        assert (report.rows, report.created, report.updated, report.rejected) == (2, 1, 1, 0)
        contacts = await all_contacts(session, who)
        ann = contacts["+14155552671"]
        # name updated, email cleared by the empty cell, tags and notes (not in the file) kept
        assert (ann.name, ann.email, ann.tags, ann.notes) == ("Ann B", None, ["old"], "keep me")
        assert contacts["+14155552672"].email == "cy@example.com"


async def test_a_phone_repeated_in_a_file_keeps_the_first_row_within_and_across_batches(monkeypatch):
    monkeypatch.setattr(service, "IMPORT_BATCH", 2)
    who = tenant()
    rows = [
        "First,+14155552671",   # row 2
        "Second,+14155552672",  # row 3, fills the first batch
        "Third,+14155552673",   # row 4
        "Twice,+14155552673",   # row 5: the same batch has it
        "Again,+14155552671",   # row 6: an earlier batch had it
    ]
    async with rollback_session(SETTINGS) as session:
        report = await run_import(session, who, "name,phone\n" + "\n".join(rows))
        assert (report.created, report.updated, report.rejected) == (3, 0, 2)
        assert [(r.row, r.reason) for r in report.rejected_rows] == [(5, "DUPLICATE_IN_FILE"), (6, "DUPLICATE_IN_FILE")]
        assert "Row 4" in report.rejected_rows[0].message
        contacts = await all_contacts(session, who)
        assert contacts["+14155552671"].name == "First" and contacts["+14155552673"].name == "Third"
        # A second import of the same phone is an update, not a repetition.
        again = await run_import(session, who, "name,phone\nLater,+14155552671\n")
        assert (again.created, again.updated, again.rejected) == (0, 1, 0)


async def test_every_kind_of_bad_row_is_reported_with_its_row_number():
    who = tenant()
    text = (
        "Name,Phone,Email,Tags,Notes\n"
        "Good,+14155552671,good@example.com,VIP;Customer,fine\n"  # 2
        ",+14155552672,,,\n"                                     # 3 missing name
        f"{'x' * 101},+14155552673,,,\n"                         # 4 name too long
        "Bad Phone,12345,,,\n"                                   # 5
        "Bad Mail,+14155552674,not-an-email,,\n"                 # 6
        "Too,+14155552675,,,,extra\n"                            # 7 wrong column count
        "\n"                                                     # 8 blank: skipped, not counted
        f"Tags,+14155552676,,{';'.join(f't{i}' for i in range(21))},\n"  # 9 too many tags
        f"Notes,+14155552677,,,{'n' * 1001}\n"                   # 10
        "No Phone,,,,\n"                                         # 11
        "'=Formula,+14155552678,,,\n"                            # 12 good; the quote is taken off
    )
    async with rollback_session(SETTINGS) as session:
        report = await run_import(session, who, text)
        assert (report.rows, report.created, report.rejected) == (10, 2, 8)
        assert [(r.row, r.reason, r.field) for r in report.rejected_rows] == [
            (3, "MISSING_NAME", "name"),
            (4, "NAME_TOO_LONG", "name"),
            (5, "INVALID_PHONE", "phone"),
            (6, "INVALID_EMAIL", "email"),
            (7, "WRONG_COLUMN_COUNT", None),
            (9, "INVALID_TAGS", "tags"),
            (10, "NOTES_TOO_LONG", "notes"),
            (11, "MISSING_PHONE", "phone"),
        ]
        contacts = await all_contacts(session, who)
        assert contacts["+14155552671"].tags == ["vip", "customer"]
        assert contacts["+14155552678"].name == "=Formula"


async def test_the_listed_rejections_are_capped_but_all_are_counted(monkeypatch):
    monkeypatch.setattr(service, "MAX_LISTED_REJECTIONS", 3)
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        report = await run_import(session, who, "name,phone\n" + "x,bad\n" * 10)
        assert report.rejected == 10 and [r.row for r in report.rejected_rows] == [2, 3, 4]


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("name,phone,fax", "UNKNOWN_COLUMNS"),
        ("Ann,+14155552671", "UNKNOWN_COLUMNS"),  # data where the header belongs
        ("name,email", "MISSING_COLUMNS"),
        ("name,phone,Phone Number", "DUPLICATE_COLUMNS"),
        ("", "EMPTY_FILE"),
    ],
)
async def test_a_bad_header_is_refused_before_anything_is_written(header, code):
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        with pytest.raises(AppError) as err:
            await run_import(session, who, header + "\nAnn,+14155552671\n" if header else "\n\n")
        assert (err.value.status_code, err.value.code) == (422, code)
        assert await all_contacts(session, who) == {}


async def test_blank_header_cells_are_ignored_columns():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        report = await run_import(session, who, "name,,phone,\nAnn,junk,+14155552671,\n")
        assert (report.created, report.rejected) == (1, 0)
        assert (await all_contacts(session, who))["+14155552671"].name == "Ann"


async def test_a_second_concurrent_import_of_one_tenant_is_409():
    who = tenant()
    async with rollback_session(SETTINGS) as first, rollback_session(SETTINGS) as second:
        await run_import(first, who, "name,phone\nAnn,+14155552671\n")  # holds the lock until rollback
        with pytest.raises(AppError) as err:
            await run_import(second, who, "name,phone\nBob,+14155552672\n")
        assert (err.value.status_code, err.value.code) == (409, "IMPORT_IN_PROGRESS")
        await run_import(second, tenant(), "name,phone\nBob,+14155552672\n")  # other tenants are free


async def test_limits_on_rows_and_bytes_are_413(monkeypatch):
    who = tenant()
    monkeypatch.setattr(service, "MAX_IMPORT_ROWS", 3)
    async with rollback_session(SETTINGS) as session:
        with pytest.raises(AppError) as err:
            await run_import(session, who, "name,phone\n" + "".join(f"P,+1415555267{i}\n" for i in range(4)))
        assert (err.value.status_code, err.value.code) == (413, "TOO_MANY_ROWS")
    monkeypatch.setattr(service, "MAX_IMPORT_ROWS", 100)
    monkeypatch.setattr(service, "MAX_IMPORT_BYTES", 100)
    async with rollback_session(SETTINGS) as session:
        with pytest.raises(AppError) as err:
            await run_import(session, who, "name,phone\n" + "P,+14155552671\n" * 10)
        assert (err.value.status_code, err.value.code) == (413, "FILE_TOO_LARGE")


async def test_a_region_lets_numbers_without_a_country_code_in():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        refused = await run_import(session, who, "name,phone\nAnn,(415) 555-2671\n")
        assert refused.rejected_rows[0].reason == "INVALID_PHONE"
        report = await run_import(session, who, "name,phone\nAnn,(415) 555-2671\n", region="us")
        assert report.created == 1 and "+14155552671" in await all_contacts(session, who)
        with pytest.raises(AppError) as err:
            await run_import(session, who, "name,phone\n", region="XX")
        assert err.value.code == "INVALID_REGION"


async def test_update_to_a_phone_the_tenant_has_is_409_naming_it():
    who = tenant()
    async with rollback_session(SETTINGS) as session:
        ann = await service.create(session, who, ContactCreate(name="Ann", phone="+14155552671"))
        bob = await service.create(session, who, ContactCreate(name="Bob", phone="+14155552672"))
        with pytest.raises(AppError) as err:
            await service.update(session, who, bob.id, ContactUpdate(phone="+1 415 555 2671"))
        assert err.value.code == "CONTACT_EXISTS" and err.value.details["id"] == str(ann.id)
        same = await service.update(session, who, bob.id, ContactUpdate(phone="+14155552672", tags=None))
        assert same.phone == "+14155552672" and same.tags == []
