"""Contacts as a tenant meets them through the gateway (issue 5; seeds 000 and 002): CRUD and its
errors in the envelope, duplicates, search and tags, tenant isolation, CSV export (escaped
against formula injection) and import (a report of the rows refused), and a 50,000-row import
that must not take the file into memory."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

from tests.support import SERVICE_PORTS, devstack

PASSWORD = "correct horse battery"


async def owner(gateway: httpx.AsyncClient) -> dict[str, str]:
    """A new tenant (registration gives one); answers its bearer header."""
    r = await gateway.post(
        "/api/v1/users/register",
        json={"email": f"c{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD, "name": "Contact Keeper"},
    )
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['data']['accessToken']}"}


async def create(gateway: httpx.AsyncClient, who: dict, **body) -> dict:
    r = await gateway.post("/api/v1/contacts", json=body, headers=who)
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def listed(gateway: httpx.AsyncClient, who: dict, **params) -> dict:
    r = await gateway.get("/api/v1/contacts", params=params, headers=who)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def export(gateway: httpx.AsyncClient, who: dict, **params) -> str:
    r = await gateway.get("/api/v1/contacts/export", params=params, headers=who)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == "attachment; filename=contacts.csv"
    return r.text


async def import_file(gateway: httpx.AsyncClient, who: dict, data: bytes, **kwargs) -> httpx.Response:
    return await gateway.post(
        "/api/v1/contacts/import/csv", files={"file": ("contacts.csv", data, "text/csv")}, headers=who, **kwargs
    )


def error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] == code, body
    return body


async def test_a_contact_is_created_read_changed_and_deleted(gateway):
    who = await owner(gateway)
    # Seed 002's alias path and field name: /api/contacts, phoneNumber.
    r = await gateway.post(
        "/api/contacts",
        json={"name": " Ann Lee ", "phoneNumber": "+1 (415) 555-2671", "email": "Ann@Example.COM", "tags": ["VIP", "vip", " Customer "]},
        headers=who,
    )
    assert r.status_code == 201, r.text
    ann = r.json()["data"]
    assert r.json()["success"] is True
    assert ann["name"] == "Ann Lee" and ann["phone"] == "+14155552671" and ann["email"] == "Ann@example.com"
    assert ann["tags"] == ["vip", "customer"] and ann["notes"] is None
    assert set(ann) == {"id", "name", "phone", "email", "tags", "notes", "createdAt", "updatedAt"}

    r = await gateway.get(f"/api/v1/contacts/{ann['id']}", headers=who)
    assert r.status_code == 200 and r.json()["data"] == ann

    r = await gateway.patch(f"/api/v1/contacts/{ann['id']}", json={"notes": "met at the fair", "email": None}, headers=who)
    assert r.status_code == 200, r.text
    changed = r.json()["data"]
    assert changed["notes"] == "met at the fair" and changed["email"] is None and changed["name"] == "Ann Lee"
    assert datetime.fromisoformat(changed["updatedAt"]) > datetime.fromisoformat(ann["updatedAt"])
    assert changed["createdAt"] == ann["createdAt"]

    r = await gateway.put(f"/api/v1/contacts/{ann['id']}", json={"phone": "+14155552672", "tags": []}, headers=who)
    assert r.status_code == 200 and r.json()["data"]["phone"] == "+14155552672" and r.json()["data"]["tags"] == []

    r = await gateway.delete(f"/api/v1/contacts/{ann['id']}", headers=who)
    assert r.status_code == 200 and r.json()["data"] == {"id": ann["id"], "deleted": True}
    error(await gateway.get(f"/api/v1/contacts/{ann['id']}", headers=who), 404, "CONTACT_NOT_FOUND")
    error(await gateway.delete(f"/api/v1/contacts/{ann['id']}", headers=who), 404, "CONTACT_NOT_FOUND")


async def test_invalid_contacts_are_refused_in_the_error_envelope(gateway):
    who = await owner(gateway)
    body = error(await gateway.post("/api/v1/contacts", json={"name": "X", "phone": "12345"}, headers=who), 422, "INVALID_PHONE")
    assert body["requestId"]
    body = error(
        await gateway.post(
            "/api/v1/contacts",
            json={"name": "", "phone": "+14155552671", "email": "nope", "tags": ["a;b"], "notes": "n" * 1001, "tenantId": "x"},
            headers=who,
        ),
        422, "VALIDATION_ERROR",
    )
    assert {d["field"] for d in body["details"]} == {"name", "email", "tags", "notes", "tenantId"}
    error(await gateway.post("/api/v1/contacts", json={"name": "x" * 101, "phone": "+14155552671"}, headers=who), 422, "VALIDATION_ERROR")
    error(await gateway.post("/api/v1/contacts", json={"name": "No phone"}, headers=who), 422, "VALIDATION_ERROR")
    error(await gateway.post("/api/v1/contacts", json={"name": "T", "phone": "+14155552671", "tags": [f"t{i}" for i in range(21)]}, headers=who), 422, "VALIDATION_ERROR")

    ann = await create(gateway, who, name="Ann", phone="+14155552671")
    body = error(await gateway.patch(f"/api/v1/contacts/{ann['id']}", json={"name": None}, headers=who), 422, "VALIDATION_ERROR")
    error(await gateway.patch(f"/api/v1/contacts/{ann['id']}", json={"role": "OWNER"}, headers=who), 422, "VALIDATION_ERROR")
    error(await gateway.patch(f"/api/v1/contacts/{ann['id']}", json={"phone": "+1"}, headers=who), 422, "INVALID_PHONE")
    error(await gateway.get("/api/v1/contacts/not-a-uuid", headers=who), 422, "VALIDATION_ERROR")
    error(await gateway.get("/api/v1/contacts"), 401, "UNAUTHORIZED")
    error(await gateway.get("/api/v1/contacts", params={"limit": 101}, headers=who), 422, "VALIDATION_ERROR")


async def test_a_phone_is_unique_within_a_tenant_and_a_duplicate_names_the_existing_contact(gateway):
    who = await owner(gateway)
    ann = await create(gateway, who, name="Ann", phone="+14155552671")
    bob = await create(gateway, who, name="Bob", phone="+14155552672")
    body = error(await gateway.post("/api/v1/contacts", json={"name": "Ann again", "phone": "+1 415-555-2671"}, headers=who), 409, "CONTACT_EXISTS")
    assert body["details"]["id"] == ann["id"]
    body = error(await gateway.patch(f"/api/v1/contacts/{bob['id']}", json={"phone": "+14155552671"}, headers=who), 409, "CONTACT_EXISTS")
    assert body["details"]["id"] == ann["id"]
    # Another tenant may keep the same number.
    await create(gateway, await owner(gateway), name="Ann elsewhere", phone="+14155552671")


async def test_search_by_name_or_phone_filter_by_tag_newest_first_and_paginated(gateway):
    who = await owner(gateway)
    made = []
    for i, (name, phone, tags) in enumerate([
        ("Alice Smith", "+14155552671", ["vip"]),
        ("Bob Jones", "+12125550182", ["lead"]),
        ("alicia keys", "+442079460958", ["vip", "lead"]),
        ("Carol 100%_off", "+17025550193", []),
    ]):
        made.append(await create(gateway, who, name=name, phone=phone, tags=tags, notes=str(i)))
    everyone = await listed(gateway, who)
    assert [c["name"] for c in everyone["items"]] == ["Carol 100%_off", "alicia keys", "Bob Jones", "Alice Smith"]
    assert (everyone["total"], everyone["page"], everyone["limit"], everyone["totalPages"]) == (4, 1, 20, 1)

    assert [c["name"] for c in (await listed(gateway, who, q="ALIC"))["items"]] == ["alicia keys", "Alice Smith"]
    assert [c["name"] for c in (await listed(gateway, who, q="(415) 555-26"))["items"]] == ["Alice Smith"]
    assert [c["name"] for c in (await listed(gateway, who, q="2079"))["items"]] == ["alicia keys"]
    assert [c["name"] for c in (await listed(gateway, who, q="100%_"))["items"]] == ["Carol 100%_off"]
    assert (await listed(gateway, who, q="%"))["total"] == 1  # a literal percent sign, not a wildcard
    assert [c["name"] for c in (await listed(gateway, who, tag="VIP"))["items"]] == ["alicia keys", "Alice Smith"]
    assert [c["name"] for c in (await listed(gateway, who, tag="lead", q="bob"))["items"]] == ["Bob Jones"]

    page2 = await listed(gateway, who, page=2, limit=3)
    assert [c["name"] for c in page2["items"]] == ["Alice Smith"] and (page2["total"], page2["totalPages"]) == (4, 2)
    assert (await listed(gateway, who, page=3, limit=3))["items"] == []


async def test_another_tenant_can_neither_see_nor_change_a_tenants_contacts(gateway):
    a, b = await owner(gateway), await owner(gateway)
    ann = await create(gateway, a, name="Ann", phone="+14155552671", tags=["secret"])
    for request in (
        gateway.get(f"/api/v1/contacts/{ann['id']}", headers=b),
        gateway.patch(f"/api/v1/contacts/{ann['id']}", json={"name": "Mallory"}, headers=b),
        gateway.put(f"/api/v1/contacts/{ann['id']}", json={"name": "Mallory"}, headers=b),
        gateway.delete(f"/api/v1/contacts/{ann['id']}", headers=b),
    ):
        error(await request, 404, "CONTACT_NOT_FOUND")
    assert (await listed(gateway, b))["total"] == 0
    assert (await listed(gateway, b, tag="secret"))["total"] == 0
    assert await export(gateway, b) == "name,phone,email,tags,notes\r\n"
    # B importing A's number creates B's own contact and leaves A's alone.
    r = await import_file(gateway, b, b"name,phone\nMallory,+14155552671\n")
    assert r.json()["data"]["created"] == 1
    r = await gateway.get(f"/api/v1/contacts/{ann['id']}", headers=a)
    assert r.status_code == 200 and r.json()["data"]["name"] == "Ann"


async def test_export_escapes_formulas_and_imports_back_into_another_tenant_unchanged(gateway):
    a, b = await owner(gateway), await owner(gateway)
    tricky = [
        ("=HYPERLINK(\"http://evil\",\"x\")", "+14155552671", "a@example.com", ["vip"], None),
        ("+cmd|' /C calc'!A0", "+14155552672", None, [], "-10 + 20"),
        ("@SUM(1+1)", "+442079460958", "-dash@example.com", ["-neg", "x"], "line one\nline \"two\", three"),
        ("Zoë, Jr.", "+4915112345678", None, ["émigré"], "=1+2 in the middle: fine"),
        ("Plain", "+14155552673", "plain@example.com", [], "  ok  "),
    ]
    for name, phone, email, tags, notes in tricky:
        await create(gateway, a, name=name, phone=phone, email=email, tags=tags, notes=notes)
    exported = await export(gateway, a)
    rows = list(csv.reader(io.StringIO(exported, newline="")))
    assert rows[0] == ["name", "phone", "email", "tags", "notes"]
    assert rows[1] == ["'=HYPERLINK(\"http://evil\",\"x\")", "+14155552671", "a@example.com", "vip", ""]
    assert rows[2] == ["'+cmd|' /C calc'!A0", "+14155552672", "", "", "'-10 + 20"]
    assert rows[3] == ["'@SUM(1+1)", "+442079460958", "'-dash@example.com", "'-neg;x", "line one\nline \"two\", three"]
    assert rows[4] == ["Zoë, Jr.", "+4915112345678", "", "émigré", "'=1+2 in the middle: fine"]
    # No cell but the phone starts with a formula character unescaped.
    for row in rows[1:]:
        assert all(not cell or cell[0] not in "=+-@\t\r" for i, cell in enumerate(row) if i != 1)

    r = await import_file(gateway, b, exported.encode())
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"rows": 5, "created": 5, "updated": 0, "rejected": 0, "rejectedRows": []}
    assert await export(gateway, b) == exported  # same values, same order (ids keep file order)
    originals = {c["phone"]: c for c in (await listed(gateway, a))["items"]}
    copies = {c["phone"]: c for c in (await listed(gateway, b))["items"]}
    strip = lambda c: {k: c[k] for k in ("name", "phone", "email", "tags", "notes")}
    assert {p: strip(c) for p, c in copies.items()} == {p: strip(c) for p, c in originals.items()}
    # The same file again: every row updates (nothing changes).
    r = await import_file(gateway, b, exported.encode())
    assert (r.json()["data"]["created"], r.json()["data"]["updated"]) == (0, 5)


async def test_an_import_reports_malformed_rows_by_number_and_creates_the_good_ones(gateway):
    who = await owner(gateway)
    data = (
        "\ufeffName,Phone Number,EMAIL,tags\r\n"          # BOM and header spellings as Excel writes them
        "Good One,+1 415 555 2671,one@example.com,a;b\r\n"  # 2
        "Bad Phone,555-0000,,\r\n"                        # 3
        ",+14155552672,,\r\n"                             # 4 missing name
        "Short,+14155552673\r\n"                          # 5 wrong column count
        "Bad Mail,+14155552674,not-an-email,\r\n"         # 6
        "Good Two,+14155552675,,\r\n"                     # 7
        "Dup,+14155552675,,\r\n"                          # 8 same phone as row 7
        '"Multi\r\nLine",+14155552676,,x\r\n'             # 9 a quoted name over two lines: no control chars allowed
    ).encode()
    r = await import_file(gateway, who, data)
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert (report["rows"], report["created"], report["updated"], report["rejected"]) == (8, 2, 0, 6)
    assert [(x["row"], x["reason"]) for x in report["rejectedRows"]] == [
        (3, "INVALID_PHONE"), (4, "MISSING_NAME"), (5, "WRONG_COLUMN_COUNT"), (6, "INVALID_EMAIL"),
        (8, "DUPLICATE_IN_FILE"), (9, "INVALID_NAME"),
    ]
    assert all(x["message"] for x in report["rejectedRows"])
    items = (await listed(gateway, who))["items"]
    assert sorted((c["name"], c["phone"], c["tags"]) for c in items) == [
        ("Good One", "+14155552671", ["a", "b"]), ("Good Two", "+14155552675", []),
    ]
    # A raw text/csv body works as well as a form, and ?region= admits national numbers.
    r = await gateway.post(
        "/api/v1/contacts/import/csv", params={"region": "US"}, content=b"name,phone\nNational,(415) 555-2677\n",
        headers={**who, "content-type": "text/csv"},
    )
    assert r.status_code == 200 and r.json()["data"]["created"] == 1, r.text


async def test_a_file_that_cannot_be_imported_is_refused_whole_before_anything_is_written(gateway):
    who = await owner(gateway)
    body = error(await import_file(gateway, who, b"name,phone,fax\nAnn,+14155552671,1\n"), 422, "UNKNOWN_COLUMNS")
    assert body["details"]["unknown"] == ["fax"]
    error(await import_file(gateway, who, b"name,email\nAnn,a@example.com\n"), 422, "MISSING_COLUMNS")
    error(await import_file(gateway, who, b""), 422, "EMPTY_FILE")
    error(await import_file(gateway, who, b"name,phone\nAnn,+14155552671\nBob,\xff\xfe\n"), 422, "INVALID_ENCODING")
    r = await gateway.post("/api/v1/contacts/import/csv", files={"upload": ("c.csv", b"name,phone\n")}, headers=who)
    error(r, 422, "MISSING_FILE")
    r = await gateway.post("/api/v1/contacts/import/csv", json={"name": "x"}, headers=who)
    error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert (await listed(gateway, who))["total"] == 0  # the good row before the bad bytes too


async def test_files_over_the_size_limit_are_413(gateway):
    who = await owner(gateway)
    big = b"name,phone\n" + b"x" * (10 * 1024 * 1024 + 1)
    # The gateway refuses a declared body over 10 MB itself ...
    error(await import_file(gateway, who, big), 413, "PAYLOAD_TOO_LARGE")

    # ... and the service counts the bytes of a body streamed without a length.
    async def stream():
        yield b"name,phone\n"
        for _ in range(11 * 1024):
            yield b"x" * 1023 + b"\n"  # a one-column row: rejected cheaply, and 1 KiB

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{SERVICE_PORTS['messaging']}", timeout=30) as direct:
        r = await direct.post("/api/v1/contacts/import/csv", content=stream(), headers={**who, "content-type": "text/csv"})
    error(r, 413, "FILE_TOO_LARGE")
    assert (await listed(gateway, who))["total"] == 0


def messaging_api_memory_kib() -> tuple[int, int]:
    """(VmHWM, VmRSS) of the largest messaging-api process (uvicorn's worker processes, when it
    runs several), in KiB."""
    status = devstack("ctl", "status", "messaging-api", check=False).stdout
    pid = int(status.split("pid ")[1].split(",")[0])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    largest = (0, 0)
    for proc in [pid, *map(int, children)]:
        values = {}
        with open(f"/proc/{proc}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(value.split()[0])
        largest = max(largest, (values["VmHWM"], values["VmRSS"]))
    return largest


async def test_a_50000_row_import_streams_through_in_bounded_memory(gateway):
    who = await owner(gateway)
    rows = 50_000
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "phone", "email", "tags", "notes"])
    for i in range(rows):
        # +1 415 2XX XXXX: valid NANP numbers, distinct per row.
        writer.writerow([f"Person {i}", f"+1415{200 + i // 10_000}{i % 10_000:04d}", f"p{i}@example.com", "bulk;test", f"row {i}"])
    data = out.getvalue().encode()
    hwm_before, rss_before = messaging_api_memory_kib()
    started = time.perf_counter()
    r = await import_file(gateway, who, data, timeout=120)
    elapsed = time.perf_counter() - started
    hwm_after, rss_after = messaging_api_memory_kib()
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"rows": rows, "created": rows, "updated": 0, "rejected": 0, "rejectedRows": []}
    assert (await listed(gateway, who, limit=1))["total"] == rows
    assert (await listed(gateway, who, tag="bulk", q="Person 49999"))["items"][0]["phone"] == "+14152049999"
    started = time.perf_counter()
    exported = await export(gateway, who)
    export_elapsed = time.perf_counter() - started
    assert exported.count("\r\n") == rows + 1
    print(
        f"\n50k import: {len(data) / 1e6:.1f} MB in {elapsed:.1f} s; export {export_elapsed:.1f} s; "
        f"messaging-api VmHWM {hwm_before / 1024:.0f} -> {hwm_after / 1024:.0f} MiB, "
        f"VmRSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB"
    )
