"""`Idempotency-Key` for money-moving POSTs: a repeat replays the first answer, a repeat with a
different body is refused, and nothing moves twice.

The key row is written in the same transaction as the work, so a concurrent duplicate waits on
the unique index until the first commits, then replays its stored answer. Needs a table
`idempotency_keys(scope, key, request_hash, status_code, response, created_at)` in the
service's schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from common.errors import AppError

_CLAIM = text(
    "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES (:s, :k, :h) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)
_READ = text("SELECT request_hash, status_code, response FROM idempotency_keys WHERE scope = :s AND key = :k")
_STORE = text(
    "UPDATE idempotency_keys SET status_code = :c, response = CAST(:r AS jsonb) WHERE scope = :s AND key = :k"
)


class IdempotencyKeyReused(AppError):
    status_code, code = 422, "IDEMPOTENCY_KEY_REUSED"
    message = "This Idempotency-Key was used with a different request"


class IdempotencyInProgress(AppError):
    status_code, code = 409, "IDEMPOTENCY_IN_PROGRESS"
    message = "A request with this Idempotency-Key is still being processed"


_KEY_HEADER = Header(alias="Idempotency-Key", min_length=8, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
IdempotencyKeyHeader = Annotated[str, _KEY_HEADER]  # money-moving POSTs: required
OptionalIdempotencyKey = Annotated[str | None, _KEY_HEADER]  # sends: a retry with it sends nothing twice


@dataclass
class Replay:
    status_code: int
    body: dict[str, Any]


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


async def begin(session: AsyncSession, scope: str, key: str, body: Any) -> Replay | None:
    """Claim the key for this request; a Replay when it was already answered."""
    digest = request_hash(body)
    if (await session.execute(_CLAIM, {"s": scope, "k": key, "h": digest})).first() is not None:
        return None
    row = (await session.execute(_READ, {"s": scope, "k": key})).one()
    if row.request_hash != digest:
        raise IdempotencyKeyReused()
    if row.status_code is None:
        raise IdempotencyInProgress()
    return Replay(row.status_code, row.response)


async def finish(session: AsyncSession, scope: str, key: str, status_code: int, body: dict[str, Any]) -> None:
    await session.execute(
        _STORE, {"s": scope, "k": key, "c": status_code, "r": json.dumps(body, default=str)}
    )


async def answer_once(
    session: AsyncSession,
    scope: str,
    key: str | None,
    request: Any,
    status_code: int,
    work: Callable[[], Awaitable[dict[str, Any]]],
) -> JSONResponse:
    """A POST taking an `Idempotency-Key`: with a key, the first request runs `work` and its answer
    is stored; a repeat replays it, the same key with another body is refused. Without a key
    (where it is optional) `work` just runs. All in the request's transaction."""
    if key is not None:
        replay = await begin(session, scope, key, request)
        if replay is not None:
            return JSONResponse(replay.body, status_code=replay.status_code)
    response = await work()
    if key is not None:
        await finish(session, scope, key, status_code, response)
    return JSONResponse(response, status_code=status_code)
