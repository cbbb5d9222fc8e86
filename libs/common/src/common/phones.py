"""Phone numbers: parsed, validated and normalised to E.164 with `phonenumbers`.

`parse` is the one place a number is read: cached (parsing and validating costs ~60 µs a number,
and a bulk send, the dispatcher's routing and inbound traffic see the same numbers again and
again), and it never raises. `to_e164` is its 422-raising form for request input."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

from common.errors import Unprocessable

MAX_RAW = 32  # characters of a written number; longer input is not read at all
UNKNOWN_REGION = "ZZ"  # phonenumbers' word for "no country" (non-geographic numbers)


@lru_cache(maxsize=65_536)
def parse(raw: str, default_region: str | None = None) -> tuple[str, str] | None:
    """(E.164, ISO country or "ZZ") of a valid number; None when `raw` is not one. Without
    `default_region`, `raw` must carry its country code (`+...`)."""
    if not raw or len(raw) > MAX_RAW:
        return None
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    # What is_valid_number does, keeping the region it finds (the costly part, done once).
    region = phonenumbers.region_code_for_number(number)
    if not phonenumbers.is_valid_number_for_region(number, region):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region or UNKNOWN_REGION


def to_e164(raw: str, default_region: str | None = None) -> str:
    """`+1 (415) 555-2671` -> `+14155552671`; a 422 for anything that is not a valid number."""
    if not raw or len(raw) > MAX_RAW:
        raise Unprocessable("Phone number is missing or too long", code="INVALID_PHONE")
    parsed = parse(raw, default_region)
    if parsed is None:
        raise Unprocessable("Not a valid phone number", code="INVALID_PHONE")
    return parsed[0]


def region_of(e164: str) -> str | None:
    """ISO country code of a valid number (`+4915...` -> `DE`); None when it has none or is not
    a valid number."""
    parsed = parse(e164)
    return None if parsed is None or parsed[1] == UNKNOWN_REGION else parsed[1]
