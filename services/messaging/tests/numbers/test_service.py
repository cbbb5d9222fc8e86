"""Registering a number against the real messaging schema (each test rolled back): a code goes
to the number as a platform SMS on the otp lane, only its HMAC is kept, and the number becomes
the tenant's when the code comes back; wrong codes run out, old codes expire, new codes are
rationed, and the first tenant to prove a number owns it."""

from __future__ import annotations

import re
import uuid

import pytest
from common.auth import Principal
from common.errors import AppError
from messaging.dispatch.otp import PLATFORM_TENANT
from messaging.numbers import service
from messaging.numbers.schemas import NumberCreate
from messaging.settings import MessagingSettings
from sqlalchemy import text

from tests.support import random_phone, rollback_session

SETTINGS = MessagingSettings(sms_number_code_resend_s=0)


def principal() -> Principal:
    tenant = uuid.uuid4()
    return Principal(user_id=str(uuid.uuid4()), tenant_id=str(tenant), roles=("OWNER",))


@pytest.fixture
async def session():
    async with rollback_session(SETTINGS) as s:
        yield s


async def codes_sent(session, number: str) -> list[str]:  # noqa: ANN001
    """The codes in the SMS queued to `number`, oldest first (the body holds the code until sent)."""
    rows = await session.execute(
        text("SELECT body FROM messages WHERE to_number = :n AND external_id LIKE 'number:%' ORDER BY id"),
        {"n": number},
    )
    return [re.search(r"\d{6}", body).group() for (body,) in rows]


def refused(exc: pytest.ExceptionInfo[AppError], status: int, code: str) -> None:
    assert (exc.value.status_code, exc.value.code) == (status, code), exc.value


async def test_the_code_goes_to_the_number_as_a_platform_sms_and_only_its_hmac_is_kept(session):
    who, number = principal(), random_phone()
    pending = await service.add(session, SETTINGS, who, NumberCreate(number=number, label="Desk"))
    assert (pending.number, pending.label, pending.status) == (number, "Desk", "pending")
    row = (await session.execute(
        text("SELECT tenant_id, route, billing, status, from_number, expires_at, body FROM messages"
             " WHERE to_number = :n AND external_id LIKE 'number:%'"), {"n": number},
    )).one()
    assert (row.tenant_id, row.route, row.billing, row.status) == (PLATFORM_TENANT, "otp", "none", "queued")
    assert row.from_number == SETTINGS.sms_default_sender and row.expires_at == pending.expires_at
    (code,) = await codes_sent(session, number)
    assert "verify this number" in row.body
    stored = (await session.execute(text("SELECT * FROM sms_number_claims WHERE number = :n"), {"n": number})).one()
    assert code not in {str(v) for v in stored} and len(stored.code_hash) == 64
    # Pending: not a sender yet, and not the owner of SMS to it.
    assert (await session.execute(text("SELECT count(*) FROM sms_numbers WHERE number = :n"), {"n": number})).scalar() == 0
    verified = await service.verify(session, SETTINGS, who, number, code)
    assert (verified.number, verified.label, verified.status) == (number, "Desk", "verified")
    owner = (await session.execute(text("SELECT tenant_id FROM sms_numbers WHERE number = :n"), {"n": number})).scalar()
    assert owner == who.tenant_uuid
    # A retried verify answers the same; the claim is gone.
    assert (await service.verify(session, SETTINGS, who, number, code)).status == "verified"
    assert [n.status for n in (await service.list_numbers(session, who, offset=0, limit=10))[0]] == ["verified"]


async def test_wrong_codes_run_out_and_then_even_the_right_one_is_refused_until_a_new_code(session):
    who, number = principal(), random_phone()
    await service.add(session, SETTINGS, who, NumberCreate(number=number))
    (code,) = await codes_sent(session, number)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in range(SETTINGS.sms_number_code_attempts - 1, 0, -1):
        with pytest.raises(AppError) as exc:
            await service.verify(session, SETTINGS, who, number, wrong)
        refused(exc, 422, "CODE_INVALID")
        assert exc.value.details["attemptsLeft"] == left and exc.value.commit  # the attempt stays spent
    with pytest.raises(AppError) as exc:
        await service.verify(session, SETTINGS, who, number, wrong)
    refused(exc, 423, "CODE_LOCKED")
    with pytest.raises(AppError) as exc:
        await service.verify(session, SETTINGS, who, number, code)
    refused(exc, 423, "CODE_LOCKED")
    # A new code starts again; the old one no longer works.
    await service.add(session, SETTINGS, who, NumberCreate(number=number))
    old, new = await codes_sent(session, number)
    assert old == code
    if new != old:
        with pytest.raises(AppError) as exc:
            await service.verify(session, SETTINGS, who, number, old)
        refused(exc, 422, "CODE_INVALID")
    assert (await service.verify(session, SETTINGS, who, number, new)).status == "verified"


async def test_an_expired_code_is_gone_and_new_codes_are_rationed(session):
    who, number = principal(), random_phone()
    await service.add(session, SETTINGS, who, NumberCreate(number=number))
    (code,) = await codes_sent(session, number)
    await session.execute(
        text("UPDATE sms_number_claims SET expires_at = now() - interval '1 second' WHERE number = :n"), {"n": number}
    )
    with pytest.raises(AppError) as exc:
        await service.verify(session, SETTINGS, who, number, code)
    refused(exc, 410, "CODE_EXPIRED")
    await service.add(session, SETTINGS, who, NumberCreate(number=number))  # registering again: a new code
    (_, code) = await codes_sent(session, number)
    rationed = MessagingSettings(sms_number_code_resend_s=30)
    with pytest.raises(AppError) as exc:
        await service.add(session, rationed, who, NumberCreate(number=number))
    refused(exc, 429, "CODE_RECENTLY_SENT")
    assert 1 <= exc.value.details["retryIn"] <= 30 and exc.value.headers["Retry-After"]
    assert len(await codes_sent(session, number)) == 2  # the refused ask sent nothing
    assert (await service.verify(session, SETTINGS, who, number, code)).status == "verified"


async def test_the_first_tenant_to_prove_a_number_owns_it(session):
    first, second, number = principal(), principal(), random_phone()
    await service.add(session, SETTINGS, first, NumberCreate(number=number))
    await service.add(session, SETTINGS, second, NumberCreate(number=number))  # a claim each
    code_first, code_second = await codes_sent(session, number)
    assert (await service.verify(session, SETTINGS, second, number, code_second)).status == "verified"
    with pytest.raises(AppError) as exc:
        await service.verify(session, SETTINGS, first, number, code_first)
    refused(exc, 409, "NUMBER_TAKEN")
    with pytest.raises(AppError) as exc:
        await service.add(session, SETTINGS, first, NumberCreate(number=number))
    refused(exc, 409, "NUMBER_TAKEN")
    assert (await service.list_numbers(session, first, offset=0, limit=10)) == ([], 0)
    with pytest.raises(AppError) as exc:
        await service.verify(session, SETTINGS, principal(), random_phone(), "123456")
    refused(exc, 404, "NUMBER_NOT_CLAIMED")
