"""Code SMS (auth's OTPs, the codes that prove a tenant owns a number): queueing one on the
`otp` route, building its text from a template, and taking the code out once the SMS is gone.

The stored body of an OTP message holds the code only while the message waits to be sent; once
its outcome is known (sent or failed) the code's characters become `•`, so codes do not sit in
the database (nor in backups of it). The code is found again through the template, because the
message row does not keep it anywhere else."""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from functools import lru_cache

from common.ids import uuid7
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.conversations.repository import ensure_conversations
from messaging.dispatch import repository as repo
from messaging.sms import status as st
from messaging.sms.segments import analyse

MASK = "•"
# The tenant of code SMS sent for the platform itself (auth's OTPs, number verification codes).
PLATFORM_TENANT = uuid.UUID(int=0)
_FIELD = re.compile(r"\{(code|minutes)\}")
_LONG_DIGITS = re.compile(r"\d{4,}")


async def queue_code_sms(
    session: AsyncSession,
    *,
    tenant: uuid.UUID,
    sender: str,
    to: str,
    body: str,
    external_id: str,
    expires_at: datetime,
    detail: str,
) -> uuid.UUID | None:
    """Store a code SMS, due at once on the `otp` lane (never billed, failed as `expired` rather
    than sent late); its id, or None when `external_id` already has one (a redelivery). Without
    a wake-up the lane finds it within its idle poll (at most two seconds)."""
    info = analyse(body)
    conversations = await ensure_conversations(session, tenant, [(sender, to)])
    message_id = uuid7()
    if not await repo.insert_otp(
        session, message_id=message_id, tenant_id=tenant, conversation_id=conversations[(sender, to)],
        sender=sender, to=to, body=body, encoding=info.encoding, segments=info.segments,
        external_id=external_id, expires_at=expires_at,
    ):
        return None
    await st.record_created(session, [message_id], st.QUEUED, detail)
    return message_id


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
