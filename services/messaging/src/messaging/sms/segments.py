"""GSM-7 / UCS-2 detection and segment counting for one SMS text.

A text that the GSM 03.38 default alphabet (with its extension table) can carry is sent as GSM-7:
160 septets in a single message, 153 per part once it needs a concatenation header. Every
extension character (`€ [ ] { } ~ ^ \\ |` and form feed) costs two septets (ESC + code). Any
other text is sent as UCS-2 (in practice UTF-16): 70 code units alone, 67 per part; a character
outside the BMP (most emoji) is a surrogate pair, two units.

Parts are computed by packing characters greedily, never by dividing, because a part must not end
between the two septets of an escape sequence or the two halves of a surrogate pair: a
two-unit character that does not fit in what is left of a part moves whole to the next one, so
the count can be higher than `ceil(units / 153)`. That is how handsets and SMSCs split, and it is
what a provider bills.

`analyse` is the one entry point; `InvalidSmsText` is both a `ValueError` (so a pydantic
validator can raise it) and a 422 `AppError` (so domain code can let it through to the API).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
from common.errors import Unprocessable

GSM7: Literal["GSM-7"] = "GSM-7"
UCS2: Literal["UCS-2"] = "UCS-2"
Encoding = Literal["GSM-7", "UCS-2"]

MAX_CHARS = 1600  # characters (code points) in one text; the API refuses longer ones

SINGLE = {GSM7: 160, UCS2: 70}
MULTIPART = {GSM7: 153, UCS2: 67}  # what is left after the 6-byte concatenation header

_CODEC = "gsm03.38"
# The codec maps U+001B to the bare escape septet, which a handset then reads as the start of an
# extension pair: it cannot be carried as text, so a text that holds it goes as UCS-2.
_ESC = "\x1b"


class InvalidSmsText(Unprocessable, ValueError):
    """An SMS text that cannot be sent: empty, longer than MAX_CHARS, or not valid Unicode."""

    code, message = "INVALID_SMS_TEXT", "Invalid SMS text"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2) of the whole text
    segments: int  # SMS parts the text is sent (and billed) as
    per_segment: int  # capacity of each part in units: 160/70 for one part, 153/67 for several
    parts: tuple[str, ...]  # the text cut as it is sent; "".join(parts) == text
    remaining: int  # units still free in the last part


def analyse(text: str) -> SegmentInfo:
    """Encoding, size and parts of one SMS text; `InvalidSmsText` if it cannot be sent."""
    if not isinstance(text, str) or not text:
        raise InvalidSmsText("The message text is empty", code="EMPTY_MESSAGE")
    if len(text) > MAX_CHARS:
        raise InvalidSmsText(
            f"The message text is longer than {MAX_CHARS} characters",
            code="MESSAGE_TOO_LONG",
            details={"chars": len(text), "max": MAX_CHARS},
        )
    encoding, widths = _unit_widths(text)
    units = sum(widths)
    single = SINGLE[encoding]
    if units <= single:
        return SegmentInfo(encoding, units, 1, single, (text,), single - units)
    limit = MULTIPART[encoding]
    parts: list[str] = []
    start, used = 0, 0
    for i, width in enumerate(widths):
        if used + width > limit:
            parts.append(text[start:i])
            start, used = i, 0
        used += width
    parts.append(text[start:])
    return SegmentInfo(encoding, units, len(parts), limit, tuple(parts), limit - used)


def _unit_widths(text: str) -> tuple[Encoding, list[int]]:
    """The encoding, and how many units each character (code point) of `text` takes in it."""
    # The codec is stateless (each character maps on its own), so a text is GSM-7 when each of its
    # characters is; the per-character answer is cached (the codec is pure Python and slow).
    widths = [_septets(ch) for ch in text]
    if all(widths):
        return GSM7, widths
    try:
        text.encode("utf-16-le")
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\ud800" decodes to one)
        raise InvalidSmsText(
            "The message text is not valid Unicode", code="INVALID_SMS_TEXT"
        ) from exc
    return UCS2, [2 if ord(ch) > 0xFFFF else 1 for ch in text]


@lru_cache(maxsize=4096)
def _septets(ch: str) -> int:
    """1 septet, or 2 (ESC + code) for an extension-table character; 0: not in GSM-7."""
    if ch == _ESC:
        return 0
    try:
        return len(ch.encode(_CODEC))
    except UnicodeEncodeError:
        return 0
