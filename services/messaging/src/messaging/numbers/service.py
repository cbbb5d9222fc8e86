"""A tenant's SMS numbers: the numbers it may send from (`sender`, seed 003 `senderPhone`) and
whose inbound SMS belong to it. One owner per number, across tenants; the platform's shared
default sender is nobody's.

A number is the tenant's only once it proved it receives SMS there: registering sends a six-digit
code to the number (the platform's sender, the `otp` lane, not billed, stored under the platform
tenant so the claimant cannot read it in its own logs) and the number is added when the code
comes back. Until then it is `pending`: not a sender, and SMS to it are not the tenant's.
Several tenants may claim one number; the first to prove it owns it. The code is kept as an
HMAC, a wrong one spends one of `sms_number_code_attempts`, and a new code may be asked for
every `sms_number_code_resend_s`."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from common.auth import Principal
from common.errors import AppError, Conflict, NotFound, RateLimited, Unprocessable
from common.ids import uuid7
from common.phones import to_e164
from common.sealed import code_hash, code_matches, new_code
from sqlalchemy.ext.asyncio import AsyncSession

from messaging.dispatch.otp import PLATFORM_TENANT, otp_text, queue_code_sms
from messaging.numbers.repository import NumberRepository
from messaging.numbers.schemas import NumberCreate, NumberRead
from messaging.settings import MessagingSettings


class NumberTaken(Conflict):
    code, message = "NUMBER_TAKEN", "This number is already registered"


class NumberNotFound(NotFound):
    code, message = "NUMBER_NOT_FOUND", "No such number among yours"


class NoCodeSent(NotFound):
    code, message = "NUMBER_NOT_CLAIMED", "No code was sent to this number for you: register it first"


class CodeExpired(AppError):
    status_code, code, message = 410, "CODE_EXPIRED", "The code has expired: register the number again for a new one"


class CodeLocked(AppError):
    status_code, code, message = 423, "CODE_LOCKED", "Too many wrong codes: register the number again for a new one"


async def add(session: AsyncSession, settings: MessagingSettings, principal: Principal, body: NumberCreate) -> NumberRead:
    """Claim a number and send it a code (again, when asked after the resend interval)."""
    number = to_e164(body.number)
    if number == settings.sms_default_sender:
        raise NumberTaken("This is the platform's shared number", details={"number": number})
    repo = NumberRepository(session)
    if await repo.owner(number) is not None:
        # Whether it is yours or another tenant's is not told: either way it cannot be added.
        raise NumberTaken(details={"number": number})
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=settings.sms_number_code_ttl_s)
    code = new_code()
    code_id = uuid7()
    row = await repo.put_claim(
        principal.tenant_uuid, number, label=body.label or None, code_id=code_id,
        code_hash=code_hash(settings.sms_number_code_pepper, code_id, code), now=now, expires_at=expires_at,
        resend_after=now - timedelta(seconds=settings.sms_number_code_resend_s),
    )
    if row is None:
        claim = await repo.claim(principal.tenant_uuid, number)
        wait = math.ceil(settings.sms_number_code_resend_s - (now - claim.sent_at).total_seconds()) if claim else 1
        raise RateLimited(
            "A code went to this number moments ago", code="CODE_RECENTLY_SENT",
            details={"number": number, "retryIn": max(1, wait)}, headers={"Retry-After": str(max(1, wait))},
        )
    await queue_code_sms(
        session, tenant=PLATFORM_TENANT, sender=settings.sms_otp_sender or settings.sms_default_sender,
        to=number, body=otp_text(settings.sms_number_code_text, code, expires_at, now),
        external_id=f"number:{code_id}", expires_at=expires_at, detail="number verification code",
    )
    return _read(row, "pending", row.expires_at)


async def verify(
    session: AsyncSession, settings: MessagingSettings, principal: Principal, raw: str, code: str
) -> NumberRead:
    """The code sent to the number: right, and the number is the tenant's."""
    number = to_e164(raw)
    repo = NumberRepository(session)
    now = datetime.now(UTC)
    claim = await repo.spend_attempt(principal.tenant_uuid, number, settings.sms_number_code_attempts, now)
    if claim is None:
        current = await repo.claim(principal.tenant_uuid, number)
        if current is None:
            owner = await repo.owner(number)
            if owner == principal.tenant_uuid:  # verified already (a retried request)
                return _read(await repo.owned(principal.tenant_uuid, number), "verified")
            if owner is not None:  # another tenant proved it first
                raise NumberTaken(details={"number": number})
            raise NoCodeSent(details={"number": number})
        if current.expires_at <= now:
            raise CodeExpired(details={"number": number})
        raise CodeLocked(details={"number": number})
    if not code_matches(settings.sms_number_code_pepper, claim.code_id, code, claim.code_hash):
        left = settings.sms_number_code_attempts - claim.attempts
        if left <= 0:
            raise CodeLocked(details={"number": number}, commit=True)
        # The spent attempt is committed with the refusal.
        raise Unprocessable("Wrong code", code="CODE_INVALID", details={"number": number, "attemptsLeft": left},
                            commit=True)
    row = await repo.insert_if_free(principal.tenant_uuid, number, claim.label)
    if row is None:
        raise NumberTaken(details={"number": number})
    await repo.drop_claims(number)
    return _read(row, "verified")


def _read(row: Any, status: str, expires_at: datetime | None = None) -> NumberRead:
    return NumberRead(number=row.number, label=row.label, created_at=row.created_at, status=status,
                      expires_at=expires_at)


async def list_numbers(
    session: AsyncSession, principal: Principal, *, offset: int, limit: int
) -> tuple[list[NumberRead], int]:
    rows, total = await NumberRepository(session).page(principal.tenant_uuid, offset=offset, limit=limit)
    return [_read(r, r.status, r.expires_at) for r in rows], total


async def remove(session: AsyncSession, principal: Principal, raw: str) -> str:
    number = to_e164(raw)
    if not await NumberRepository(session).delete(principal.tenant_uuid, number):
        raise NumberNotFound(details={"number": number})
    return number
