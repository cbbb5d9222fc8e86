"""The one way an outbound message's status moves: forward only, with history and an event.

    queued -> sent -> delivered | failed          (rank 0 -> 1 -> 2)
    queued -> rejected | failed | delivered       (a report may overtake the dispatcher's write)

A change to a status of lower or equal rank is ignored (a late `sent` report after `delivered`,
a `failed` report after `delivered`, a duplicate), so delivery reports and the dispatcher can
race and arrive in any order or any number of times: the end state is the same. Provider details
(`provider`, `provider_message_id`) are recorded even when the status does not move, because the
dispatcher learns the provider id after a report may already have moved the status.

Every status that moves writes a `message_status_history` row and emits
`messaging.sms.status.v1` (billing captures the hold on sent/delivered, releases it on
failed/rejected). All of it in the caller's transaction, in one statement per batch.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from common.contracts.messaging.v1 import SmsStatusV1
from common.messaging import emit_many
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

QUEUED, SENT, DELIVERED, FAILED, REJECTED, RECEIVED = (
    "queued",
    "sent",
    "delivered",
    "failed",
    "rejected",
    "received",
)
RANK = {QUEUED: 0, SENT: 1, DELIVERED: 2, FAILED: 2, REJECTED: 2}
TERMINAL = frozenset({DELIVERED, FAILED, REJECTED})

_RANK_SQL = "(CASE m.status WHEN 'queued' THEN 0 WHEN 'sent' THEN 1 ELSE 2 END)"


def moves(current: str, new: str) -> bool:
    """Whether a change to `new` moves a message now at `current`: the rule `apply` follows in
    SQL. A status outside RANK counts as moving, so `apply` gets it (and refuses it)."""
    return new not in RANK or RANK.get(current, 0) < RANK[new]

# One statement for a whole batch of changes (ids unique within the batch). `old` locks the rows
# and keeps their status before the update, so RETURNING tells which ones moved.
_APPLY = text(
    f"""
    WITH c AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:ranks AS int[]),
            CAST(:providers AS text[]), CAST(:pmids AS text[]), CAST(:errors AS text[])
        ) AS c(id, status, rank, provider, pmid, error)
    ),
    old AS (
        SELECT m.id, m.status FROM messages m
        WHERE m.id = ANY(CAST(:ids AS uuid[])) AND m.direction = 'outbound' ORDER BY m.id FOR UPDATE
    )
    UPDATE messages m SET
        status = CASE WHEN {_RANK_SQL} < c.rank THEN c.status ELSE m.status END,
        error = CASE WHEN {_RANK_SQL} < c.rank AND c.error IS NOT NULL THEN c.error ELSE m.error END,
        provider = COALESCE(c.provider, m.provider),
        provider_message_id = COALESCE(c.pmid, m.provider_message_id),
        sent_at = CASE WHEN {_RANK_SQL} < c.rank AND c.rank >= 1 AND c.status <> 'rejected'
                       THEN COALESCE(m.sent_at, now()) ELSE m.sent_at END,
        delivered_at = CASE WHEN {_RANK_SQL} < c.rank AND c.status = 'delivered'
                            THEN now() ELSE m.delivered_at END,
        next_attempt_at = CASE WHEN {_RANK_SQL} < c.rank THEN NULL ELSE m.next_attempt_at END,
        lease_until = CASE WHEN {_RANK_SQL} < c.rank THEN NULL ELSE m.lease_until END,
        updated_at = now()
    FROM c JOIN old ON old.id = c.id
    WHERE m.id = c.id AND m.id = ANY(CAST(:ids AS uuid[]))
    RETURNING m.id, m.tenant_id, old.status AS old_status, m.status, m.provider, m.error
    """
)
_HISTORY = text(
    "INSERT INTO message_status_history (message_id, status, detail) "
    "SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:details AS text[]))"
)


@dataclass(frozen=True)
class Change:
    message_id: uuid.UUID
    status: str  # sent | delivered | failed | rejected
    detail: str | None = None  # for the history: what caused it ("provider simulator accepted")
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Moved:
    message_id: uuid.UUID
    tenant_id: uuid.UUID
    old_status: str
    status: str


async def apply(session: AsyncSession, changes: Sequence[Change]) -> list[Moved]:
    """Apply status changes (several per message allowed, applied in the given order); return
    the ones that moved a status. Unknown or inbound message ids are ignored."""
    for change in changes:
        if change.status not in RANK or change.status == QUEUED:
            raise ValueError(f"not a status a message moves to: {change.status!r}")
    moved: list[Moved] = []
    # Rounds with unique ids: a batch of reports may hold `sent` and `delivered` for one message.
    rounds: list[dict[uuid.UUID, Change]] = []
    for change in changes:
        for round_ in rounds:
            if change.message_id not in round_:
                round_[change.message_id] = change
                break
        else:
            rounds.append({change.message_id: change})
    for round_ in rounds:
        moved.extend(await _apply_round(session, list(round_.values())))
    return moved


async def _apply_round(session: AsyncSession, changes: list[Change]) -> list[Moved]:
    result = await session.execute(
        _APPLY,
        {
            "ids": [c.message_id for c in changes],
            "statuses": [c.status for c in changes],
            "ranks": [RANK[c.status] for c in changes],
            "providers": [c.provider for c in changes],
            "pmids": [c.provider_message_id for c in changes],
            "errors": [c.error[:500] if c.error else None for c in changes],
        },
    )
    by_id = {c.message_id: c for c in changes}
    moved = [
        (Moved(row.id, row.tenant_id, row.old_status, row.status), row.provider, row.error)
        for row in result
        if row.status != row.old_status
    ]
    if not moved:
        return []
    await session.execute(
        _HISTORY,
        {
            "ids": [m.message_id for m, _, _ in moved],
            "statuses": [m.status for m, _, _ in moved],
            "details": [(by_id[m.message_id].detail or "")[:500] or None for m, _, _ in moved],
        },
    )
    by_tenant: dict[uuid.UUID, list] = defaultdict(list)
    for m, provider, error in moved:
        by_tenant[m.tenant_id].append(
            (
                SmsStatusV1(
                    message_id=str(m.message_id),
                    tenant_id=str(m.tenant_id),
                    status=m.status,  # type: ignore[arg-type]
                    provider=provider,
                    error=error,
                ),
                str(m.message_id),
            )
        )
    for tenant_id, events in by_tenant.items():
        await emit_many(session, events, tenant_id=str(tenant_id))
    return [m for m, _, _ in moved]


async def record_created(
    session: AsyncSession, message_ids: Sequence[uuid.UUID], status: str, detail: str | None = None
) -> None:
    """The first history row of new messages (`queued`, `received`, or `rejected` at once)."""
    await record_history(session, [(message_id, status, detail) for message_id in message_ids])


async def record_history(session: AsyncSession, rows: Sequence[tuple[uuid.UUID, str, str | None]]) -> None:
    """History rows (message id, status, detail) for what does not move a status: the first row
    of new messages, a retry the dispatcher scheduled."""
    if rows:
        await session.execute(
            _HISTORY,
            {
                "ids": [r[0] for r in rows],
                "statuses": [r[1] for r in rows],
                "details": [r[2][:500] if r[2] else r[2] for r in rows],
            },
        )


# -- delivery reports that arrived before their message's provider id was stored ------------------

_TAKE_PENDING = text(
    """
    DELETE FROM pending_delivery_reports p
    USING unnest(CAST(:providers AS text[]), CAST(:pmids AS text[])) AS k(provider, pmid)
    WHERE p.provider = k.provider AND p.provider_message_id = k.pmid
    RETURNING p.id, p.provider, p.provider_message_id, p.status, p.error
    """
)
_PARK = text(
    "INSERT INTO pending_delivery_reports (provider, provider_message_id, status, error, webhook_id) "
    "VALUES (:provider, :pmid, :status, :error, :webhook)"
)


@dataclass(frozen=True)
class Parked:
    """A report whose message is not known by its provider id yet."""

    provider_message_id: str
    status: str
    error: str | None = None
    webhook_id: uuid.UUID | None = None


async def park_reports(session: AsyncSession, provider: str, reports: Sequence[Parked]) -> None:
    """Keep reports whose message is not known by its provider id yet (never drop them), in
    their order, in one round trip."""
    if reports:
        await session.execute(
            _PARK,
            [
                {
                    "provider": provider,
                    "pmid": r.provider_message_id,
                    "status": r.status,
                    "error": r.error[:500] if r.error else None,
                    "webhook": r.webhook_id,
                }
                for r in reports
            ],
        )


async def resolve_pending(
    session: AsyncSession, recorded: Sequence[tuple[uuid.UUID, str, str]]
) -> list[Moved]:
    """After provider ids were stored for messages ((message id, provider, provider id)), apply
    the reports that were parked for those ids, oldest first, and forget them."""
    if not recorded:
        return []
    result = await session.execute(
        _TAKE_PENDING,
        {"providers": [p for _, p, _ in recorded], "pmids": [i for _, _, i in recorded]},
    )
    parked = sorted(result, key=lambda r: r.id)
    if not parked:
        return []
    owner = {(provider, pmid): message_id for message_id, provider, pmid in recorded}
    return await apply(
        session,
        [
            Change(
                owner[(r.provider, r.provider_message_id)],
                r.status,
                detail=f"delivery report from {r.provider} (held until matched)",
                error=r.error,
            )
            for r in parked
        ],
    )
