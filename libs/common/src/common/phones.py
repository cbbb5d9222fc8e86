"""Phone numbers: parsed, validated and normalised to E.164 with `phonenumbers`."""

from __future__ import annotations

import phonenumbers

from common.errors import Unprocessable


def to_e164(raw: str, default_region: str | None = None) -> str:
    """`+1 (415) 555-2671` -> `+14155552671`; a 422 for anything that is not a valid number."""
    if not raw or len(raw) > 32:
        raise Unprocessable("Phone number is missing or too long", code="INVALID_PHONE")
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise Unprocessable("Not a phone number", code="INVALID_PHONE") from exc
    if not phonenumbers.is_valid_number(number):
        raise Unprocessable("Not a valid phone number", code="INVALID_PHONE")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str) -> str | None:
    """ISO country code of a normalised number (`+4915...` -> `DE`)."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164))
