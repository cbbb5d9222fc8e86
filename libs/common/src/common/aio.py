"""Small asyncio helpers the long-running loops (relay, consumers, dispatcher) share."""

from __future__ import annotations

import asyncio


async def wait_woken(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> bool:
    """Sleep until `wake` or `stop` is set or `timeout` passes; True if `wake` was set. Without
    `wake`: sleep until `stop` or the timeout (a backoff that ends at once on shutdown)."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return wake is not None and wake.is_set()
