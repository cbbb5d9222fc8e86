"""Identifiers made by the services."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = 0


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), strictly increasing within this process: a
    Unix-millisecond prefix, then 74 random bits that are bumped by one when the clock has not
    moved past the previous id. Time order keeps B-tree inserts at the right edge and lets rows
    made in one request keep their order when sorted by id."""
    global _last
    with _lock:
        value = (time.time_ns() // 1_000_000) << 74 | int.from_bytes(os.urandom(10), "big") >> 6
        if value <= _last:
            value = _last + 1
        _last = value
    ms, rand_a, rand_b = value >> 74, (value >> 62) & 0xFFF, value & ((1 << 62) - 1)
    return uuid.UUID(int=ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)


def parse_uuid(value: object) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is empty or not one (an id that came from outside: a
    provider's client reference, an event's reference, a Stripe metadata field)."""
    if value is None or value == "":
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
