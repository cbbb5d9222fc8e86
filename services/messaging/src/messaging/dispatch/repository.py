"""The dispatcher's SQL: billing replies, the claim with its lease, retries, OTP messages.

Every statement takes a whole batch (arrays through `unnest`), so a fetch of 500 billing replies
or a finished chunk of sends costs a handful of round trips, not one per message."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# -- billing replies ---------------------------------------------------------------------------

# Only a message still waiting for its hold moves: a redelivered reply, or one for a message that
# has moved on (cancelled, failed), changes nothing.
_RESERVED = text(
    """
    UPDATE messages m SET billing = 'reserved', price_minor = r.amount, currency = r.currency,
        next_attempt_at = now(), updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:amounts AS bigint[]), CAST(:currencies AS text[]))
        AS r(id, amount, currency)
    WHERE m.id = r.id AND m.direction = 'outbound' AND m.status = 'queued' AND m.billing = 'pending'
    RETURNING m.id
    """
)
_REJECTED = text(
    """
    UPDATE messages m SET billing = 'rejected', updated_at = now()
    WHERE m.id = ANY(CAST(:ids AS uuid[])) AND m.direction = 'outbound' AND m.status = 'queued'
      AND m.billing = 'pending'
    RETURNING m.id
    """
)


async def mark_reserved(
    session: AsyncSession, holds: Sequence[tuple[uuid.UUID, int, str]]
) -> list[uuid.UUID]:
    """(message id, amount, currency) of holds placed: due for dispatch now. The ids that moved."""
    if not holds:
        return []
    result = await session.execute(
        _RESERVED,
        {
            "ids": [h[0] for h in holds],
            "amounts": [h[1] for h in holds],
            "currencies": [h[2] for h in holds],
        },
    )
    return [row.id for row in result]


async def mark_rejected(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Messages billing refused to hold for; the ids that were still waiting for the answer."""
    if not ids:
        return []
    result = await session.execute(_REJECTED, {"ids": list(ids)})
    return [row.id for row in result]


# -- the dispatcher's queue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    tenant_id: uuid.UUID
    to: str
    sender: str
    body: str
    attempts: int  # including this one
    lag_s: float  # how long it had been due when claimed
    expires_at: datetime | None = None  # an OTP's: not worth sending after it


# The inner SELECT walks the partial index ix_messages_dispatch (route, next_attempt_at); SKIP
# LOCKED lets several dispatchers (lanes, worker copies) claim side by side. The lease is what
# keeps a claimed message from being claimed again after this transaction commits; when a worker
# dies, the lease runs out and the message is claimed (and sent with the same client reference)
# again.
_CLAIM = text(
    """
    UPDATE messages m SET lease_until = now() + make_interval(secs => :lease),
        attempts = m.attempts + 1, updated_at = now()
    WHERE m.id IN (
        SELECT id FROM messages
        WHERE route = :route AND next_attempt_at <= now() AND status = 'queued'
          AND (lease_until IS NULL OR lease_until < now())
        ORDER BY next_attempt_at
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    )
    RETURNING m.id, m.tenant_id, m.to_number, m.from_number, m.body, m.attempts,
        EXTRACT(EPOCH FROM now() - m.next_attempt_at)::float8 AS lag_s, m.expires_at
    """
)
# When the next message of the route falls due (a retry's time, or a lease running out).
_NEXT_DUE = text(
    """
    SELECT EXTRACT(EPOCH FROM min(GREATEST(next_attempt_at, COALESCE(lease_until, next_attempt_at)))
        - now())::float8
    FROM messages WHERE route = :route AND next_attempt_at IS NOT NULL AND status = 'queued'
    """
)
_DEPTH = text(
    """
    SELECT count(*) FILTER (WHERE next_attempt_at <= now()) AS due, count(*) AS waiting
    FROM messages WHERE route = :route AND next_attempt_at IS NOT NULL
    """
)
# Back in the queue after "no provider now". Only our own claim is touched: if the lease ran out
# and another dispatcher claimed the message meanwhile, its `attempts` moved on.
_RETRY = text(
    """
    UPDATE messages m SET next_attempt_at = now() + make_interval(secs => r.delay),
        lease_until = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[]), CAST(:delays AS float8[]))
        AS r(id, attempts, delay)
    WHERE m.id = r.id AND m.status = 'queued' AND m.attempts = r.attempts
    RETURNING m.id
    """
)
_SET_BODIES = text(
    """
    UPDATE messages m SET body = r.body
    FROM unnest(CAST(:ids AS uuid[]), CAST(:bodies AS text[])) AS r(id, body)
    WHERE m.id = r.id
    """
)


async def claim(session: AsyncSession, route: str, n: int, lease_s: float) -> list[Claimed]:
    result = await session.execute(_CLAIM, {"route": route, "n": n, "lease": lease_s})
    return [
        Claimed(r.id, r.tenant_id, r.to_number, r.from_number, r.body, r.attempts, max(0.0, r.lag_s or 0.0),
                r.expires_at)
        for r in result
    ]


async def next_due_in(session: AsyncSession, route: str) -> float | None:
    """Seconds until the route's next waiting message falls due (negative: already due, maybe
    leased by another dispatcher); None when nothing waits."""
    return (await session.execute(_NEXT_DUE, {"route": route})).scalar()


async def depth(session: AsyncSession, route: str) -> tuple[int, int]:
    """(due now, waiting in all) for the route."""
    row = (await session.execute(_DEPTH, {"route": route})).one()
    return row.due, row.waiting


async def schedule_retry(
    session: AsyncSession, retries: Sequence[tuple[uuid.UUID, int, float]]
) -> set[uuid.UUID]:
    """(message id, attempts of our claim, delay in seconds): release the lease, due again after
    the delay. The ids still ours."""
    if not retries:
        return set()
    result = await session.execute(
        _RETRY,
        {"ids": [r[0] for r in retries], "attempts": [r[1] for r in retries], "delays": [r[2] for r in retries]},
    )
    return {row.id for row in result}


async def set_bodies(session: AsyncSession, bodies: Sequence[tuple[uuid.UUID, str]]) -> None:
    if bodies:
        await session.execute(_SET_BODIES, {"ids": [b[0] for b in bodies], "bodies": [b[1] for b in bodies]})


# -- OTP messages ----------------------------------------------------------------------------------

# One per challenge: `external_id` is unique per tenant, so a redelivered request adds nothing.
_INSERT_OTP = text(
    """
    INSERT INTO messages (id, tenant_id, conversation_id, direction, from_number, to_number, body,
        encoding, segments, status, route, external_id, billing, next_attempt_at, expires_at)
    VALUES (:id, :tenant, :conversation, 'outbound', :sender, :to, :body, :encoding, :segments,
        'queued', 'otp', :external_id, 'none', now(), :expires_at)
    ON CONFLICT (tenant_id, external_id) WHERE external_id IS NOT NULL DO NOTHING
    RETURNING id
    """
)


async def insert_otp(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    sender: str,
    to: str,
    body: str,
    encoding: str,
    segments: int,
    external_id: str,
    expires_at: datetime | None = None,
) -> bool:
    """Store an OTP message, due now; False when this challenge already has one."""
    result = await session.execute(
        _INSERT_OTP,
        {
            "id": message_id,
            "tenant": tenant_id,
            "conversation": conversation_id,
            "sender": sender,
            "to": to,
            "body": body,
            "encoding": encoding,
            "segments": segments,
            "external_id": external_id,
            "expires_at": expires_at,
        },
    )
    return result.first() is not None
