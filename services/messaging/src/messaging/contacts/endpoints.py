"""Contacts (issue 5; seeds 000 and 002): CRUD, CSV export and import, for every member of the
caller's tenant. Reached at /api/v1/contacts and, through the gateway, at /api/contacts."""

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from common.api import Envelope, Page, Pagination, ok, paginate
from common.auth import CurrentPrincipal
from common.db.session import SessionDep
from common.errors import AppError, Unprocessable
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from python_multipart.multipart import parse_options_header
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from messaging.contacts import service
from messaging.contacts.csvio import multipart_file
from messaging.contacts.schemas import ContactCreate, ContactRead, ContactUpdate, ImportReport

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])

Q = Annotated[str | None, Query(max_length=100, description="Name contains (any case) or phone digits contain")]
Tag = Annotated[str | None, Query(max_length=32, description="Only contacts with this tag")]
# Raw CSV bodies: what browsers and tools send for a .csv file (Excel on Windows: vnd.ms-excel).
CSV_MEDIA_TYPES = {b"text/csv", b"application/csv", b"text/plain", b"application/vnd.ms-excel", b"application/octet-stream"}
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file

IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


class UnsupportedMediaType(AppError):
    status_code, code, message = 415, "UNSUPPORTED_MEDIA_TYPE", "Send multipart/form-data with a `file` field, or text/csv"


def _csv_body(request: Request) -> AsyncIterator[bytes]:
    """The CSV bytes of the request as they arrive: the `file` field of a multipart form, or
    the raw body."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > service.MAX_IMPORT_BYTES + MULTIPART_OVERHEAD:
        raise service.PayloadTooLarge(
            "The file is larger than 10 MB; split it", code="FILE_TOO_LARGE",
            details={"maxBytes": service.MAX_IMPORT_BYTES},
        )
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise Unprocessable("multipart/form-data without a boundary", code="INVALID_MULTIPART")
        return multipart_file(request.stream(), boundary)
    if media_type in CSV_MEDIA_TYPES:
        return request.stream()
    raise UnsupportedMediaType()


def _session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.session_factory


@router.get("", response_model=Envelope[Page[ContactRead]])
async def list_contacts(principal: CurrentPrincipal, session: SessionDep, page: Pagination, q: Q = None, tag: Tag = None):
    """Your tenant's contacts, newest first; `q` searches names and phone numbers, `tag` filters."""
    items, total = await service.list_contacts(
        session, principal, service.normalise_filter(q, tag), offset=page.offset, limit=page.limit
    )
    return ok(paginate([c.model_dump(mode="json", by_alias=True) for c in items], total, page))


@router.post("", status_code=201, response_model=Envelope[ContactRead])
async def create_contact(body: ContactCreate, principal: CurrentPrincipal, session: SessionDep):
    """Add a contact; the phone is stored in E.164 and is unique within your tenant (409)."""
    return ok(await service.create(session, principal, body))


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "name,phone,email,tags,notes"}},
)
async def export_contacts(principal: CurrentPrincipal, request: Request, q: Q = None, tag: Tag = None):
    """All your contacts (or those matching `q`/`tag`) as a CSV download, streamed."""
    chunks = service.export_csv(
        _session_factory(request), principal.tenant_uuid, service.normalise_filter(q, tag)
    )
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": "attachment; filename=contacts.csv", "Cache-Control": "no-store"},
    )


@router.post("/import/csv", response_model=Envelope[ImportReport], openapi_extra=IMPORT_BODY)
async def import_contacts(
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    region: Annotated[str | None, Query(max_length=2, description="Country for numbers written without +")] = None,
):
    """Create or update contacts from a CSV (header: name, phone[, email, tags, notes]); answers
    how many were created, updated and rejected, with the rejected rows and why."""
    return ok(await service.import_csv(session, principal, _csv_body(request), region=region))


@router.get("/{contact_id}", response_model=Envelope[ContactRead])
async def get_contact(contact_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep):
    """One contact of your tenant."""
    return ok(await service.get(session, principal, contact_id))


@router.patch("/{contact_id}", response_model=Envelope[ContactRead])
@router.put("/{contact_id}", response_model=Envelope[ContactRead])
async def update_contact(contact_id: uuid.UUID, body: ContactUpdate, principal: CurrentPrincipal, session: SessionDep):
    """Change the fields sent (PUT is accepted too, with the same partial meaning)."""
    return ok(await service.update(session, principal, contact_id, body))


@router.delete("/{contact_id}")
async def delete_contact(contact_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep):
    """Delete a contact of your tenant."""
    await service.delete(session, principal, contact_id)
    return ok({"id": str(contact_id), "deleted": True})
