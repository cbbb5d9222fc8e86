"""Opt-outs: an inbound STOP (or a synonym) stops a tenant's messages to that number; START
(or a synonym) lets them through again. Carrier practice: the keyword is the whole message,
case and surrounding spaces/punctuation ignored ("Stop", " STOP. " count; "please stop" does not)."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "CANCEL", "OPTOUT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})

_EDGES = re.compile(r"^[\s.!¡?¿,;:'\"-]+|[\s.!¡?¿,;:'\"-]+$")


def keyword(body: str) -> tuple[str, str] | None:
    """("stop" | "start", the keyword) when the whole message is an opt-out/opt-in keyword."""
    word = _EDGES.sub("", body).upper().replace(" ", "").replace("-", "")
    if word in STOP_WORDS:
        return "stop", word
    if word in START_WORDS:
        return "start", word
    return None


async def apply_keyword(session: AsyncSession, tenant_id: uuid.UUID, phone: str, body: str) -> str | None:
    """Record an opt-out or opt-in carried by an inbound message; "stop"/"start" or None."""
    found = keyword(body)
    if found is None:
        return None
    action, word = found
    if action == "stop":
        await session.execute(
            text(
                "INSERT INTO opt_outs (tenant_id, phone, keyword) VALUES (:t, :p, :k) "
                "ON CONFLICT (tenant_id, phone) DO UPDATE SET keyword = EXCLUDED.keyword, created_at = now()"
            ),
            {"t": tenant_id, "p": phone, "k": word},
        )
    else:
        await session.execute(text("DELETE FROM opt_outs WHERE tenant_id = :t AND phone = :p"), {"t": tenant_id, "p": phone})
    return action

