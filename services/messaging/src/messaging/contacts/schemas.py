"""Contacts on the wire. The phone arrives as typed (`+1 (415) 555-2671`) and the service
normalises it to E.164, so an invalid one is `422 INVALID_PHONE` rather than a field error."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any

from common.api import CamelModel, InputModel
from pydantic import (
    AliasChoices,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

MAX_TAGS = 20
MAX_TAG_LENGTH = 32
# Tags are joined by ';' in the CSV export and split on ';' or ',' on import.
TAG_FORBIDDEN = set(";,")

Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
RawPhone = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Notes = Annotated[str, StringConstraints(max_length=1000)]


def _control_chars(value: str, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value)


def normalise_tags(value: Any) -> list[str]:
    """Trimmed, lower-cased, de-duplicated (first spelling kept), in the order given."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValueError("tags must be a list of strings")
    tags: list[str] = []
    for raw in value:
        if not isinstance(raw, str):
            raise ValueError("tags must be strings")
        tag = raw.strip().lower()
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"a tag has 1 to {MAX_TAG_LENGTH} characters")
        if TAG_FORBIDDEN & set(tag) or _control_chars(tag):
            raise ValueError("a tag may not contain ';', ',' or control characters")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return tags


class _ContactFields(InputModel):
    @field_validator("email", "notes", mode="before", check_fields=False)
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("name", check_fields=False)
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and _control_chars(value):
            raise ValueError("a name may not contain control characters")
        return value

    @field_validator("notes", check_fields=False)
    @classmethod
    def _plain_notes(cls, value: str | None) -> str | None:
        if value is not None and _control_chars(value, allowed="\t\n\r"):
            raise ValueError("notes may not contain control characters other than tab and newline")
        return value

    @field_validator("tags", mode="before", check_fields=False)
    @classmethod
    def _tags(cls, value: Any) -> list[str]:
        return normalise_tags(value)


class ContactCreate(_ContactFields):
    name: Name
    # Seed 002 sends `phoneNumber`; both spellings are accepted.
    phone: RawPhone = Field(validation_alias=AliasChoices("phone", "phoneNumber"))
    email: EmailStr | None = Field(default=None, max_length=254)
    tags: list[str] = Field(default_factory=list)
    notes: Notes | None = None


class ContactUpdate(_ContactFields):
    """Every field optional; only the fields sent change. `null` clears email, notes or tags."""

    name: Name | None = None
    phone: RawPhone | None = Field(default=None, validation_alias=AliasChoices("phone", "phoneNumber"))
    email: EmailStr | None = Field(default=None, max_length=254)
    tags: list[str] | None = None
    notes: Notes | None = None

    @model_validator(mode="after")
    def _required_stay_set(self) -> ContactUpdate:
        for name in ("name", "phone"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ContactRead(CamelModel):
    id: uuid.UUID
    name: str
    phone: str
    email: str | None
    tags: list[str]
    notes: str | None
    created_at: datetime
    updated_at: datetime


class RejectedRow(CamelModel):
    row: int  # the record's number in the file, the header being row 1 (as a spreadsheet shows it)
    reason: str  # a stable code: INVALID_PHONE, MISSING_NAME, DUPLICATE_IN_FILE, ...
    field: str | None = None
    message: str


class ImportReport(CamelModel):
    rows: int  # data rows read (blank lines not counted)
    created: int
    updated: int
    rejected: int  # every rejected row, also those beyond the listed ones
    rejected_rows: list[RejectedRow]
