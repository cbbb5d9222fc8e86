"""OTP texts: building them from the template, and taking the code out once the SMS is gone.

The stored body of an OTP message holds the code only while the message waits to be sent; once
its outcome is known (sent or failed) the code's characters become `•`, so codes do not sit in
the database (nor in backups of it). The code is found again through the template, because the
message row does not keep it anywhere else."""

from __future__ import annotations

import math
import re
from datetime import datetime
from functools import lru_cache

MASK = "•"
_FIELD = re.compile(r"\{(code|minutes)\}")
_LONG_DIGITS = re.compile(r"\d{4,}")


def otp_text(template: str, code: str, expires_at: datetime, now: datetime) -> str:
    """The SMS for `code`, saying how many whole minutes (rounded up, at least 1) it stays valid."""
    minutes = max(1, math.ceil((expires_at - now).total_seconds() / 60))
    return template.format(code=code, minutes=minutes)


@lru_cache(maxsize=8)
def _pattern(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    seen_code = False
    for field in _FIELD.finditer(template):
        parts.append(re.escape(template[pos : field.start()].replace("{{", "{").replace("}}", "}")))
        if field.group(1) == "minutes":
            parts.append(r"\d+")
        elif seen_code:
            parts.append("(?P=code)")
        else:
            parts.append("(?P<code>.+?)")
            seen_code = True
        pos = field.end()
    parts.append(re.escape(template[pos:].replace("{{", "{").replace("}}", "}")))
    return re.compile("".join(parts), re.DOTALL)


def redact(body: str, template: str) -> str:
    """`body` with the code masked. If the body does not match the template (it was changed
    since the message was stored), every run of four or more digits is masked instead."""
    match = _pattern(template).fullmatch(body)
    if match and "code" in match.groupdict() and match.group("code"):
        code = match.group("code")
        return body.replace(code, MASK * len(code))
    return _LONG_DIGITS.sub(lambda m: MASK * len(m.group()), body)
