"""Finding or opening conversations by number pair, in bulk (a send to 10,000 recipients opens
up to 10,000 conversations in one statement)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from common.ids import uuid7
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Insert the missing pairs, touch last_message_at on all of them, return every pair's id. ON
# CONFLICT DO UPDATE (not DO NOTHING) so existing rows come back in RETURNING too; sorted input
# keeps the row-lock order the same across concurrent sends, so they cannot deadlock.
_ENSURE = text(
    """
    INSERT INTO conversations (id, tenant_id, channel, our_number, peer_number)
    SELECT p.id, :tenant, :channel, p.our, p.peer
    FROM unnest(CAST(:ids AS uuid[]), CAST(:ours AS text[]), CAST(:peers AS text[])) AS p(id, our, peer)
    ORDER BY p.our, p.peer
    ON CONFLICT (tenant_id, channel, our_number, peer_number)
    DO UPDATE SET last_message_at = now()
    RETURNING id, our_number, peer_number
    """
)


async def ensure_conversations(
    session: AsyncSession, tenant_id: uuid.UUID, pairs: Iterable[tuple[str, str]], channel: str = "sms"
) -> dict[tuple[str, str], uuid.UUID]:
    """(our number, peer number) -> conversation id, opening the ones that do not exist yet."""
    unique = sorted(set(pairs))
    if not unique:
        return {}
    result = await session.execute(
        _ENSURE,
        {
            "tenant": tenant_id,
            "channel": channel,
            "ids": [uuid7() for _ in unique],
            "ours": [our for our, _ in unique],
            "peers": [peer for _, peer in unique],
        },
    )
    return {(row.our_number, row.peer_number): row.id for row in result}
