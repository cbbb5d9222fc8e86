"""Concurrent sends written together: one transaction and one statement for many requests.

Each send is one statement either way (sms.repository), but a request's own transaction around
it costs a BEGIN, a COMMIT (waiting for the WAL flush) and the session's bookkeeping, several
times what the statement costs for one recipient. Under load the API process is the bottleneck
of single-recipient sends, so the API hands a send's rows to the coalescer instead: a writer
takes every send waiting at that moment (up to a cap), writes them with one statement in one
transaction, commits, then answers each request. Nothing waits on a timer: while one batch is
being written the next one gathers, so a lone send goes straight through and a busy API writes
bigger batches.

A request is answered only after its batch committed, as with its own transaction. When a batch
fails, each of its sends is retried alone, so one send's error (or a deadlock, a lost
connection) fails that send and no other.

Sends with an `Idempotency-Key` do not come here: their key row must commit with their messages
in the request's transaction (common.idempotency).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from messaging.sms.repository import NewMessages, Outcome, SendRepository

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    send: NewMessages
    answer: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SendCoalescer:
    """Writes the sends handed to `write` in batches; `writers` batches can be in flight at once
    (while one waits for its commit's flush, the next is written)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        writers: int = 2,
        max_sends: int = 500,
        max_rows: int = 5_000,
    ) -> None:
        self._sessions = sessions
        self._writers = writers
        self._max_sends = max_sends
        self._max_rows = max_rows
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0  # batches being written
        self.batches = 0  # written batches (for tests and metrics)
        self.largest = 0  # most sends in one batch
        self.split = 0  # batches that failed and were written again send by send

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"send-coalescer-{i}") for i in range(self._writers)]

    async def stop(self) -> None:
        """Writes what is waiting and lets the batches in flight finish, then stops."""
        while self._waiting or self._busy:
            await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def write(self, send: NewMessages) -> Outcome:
        """Store `send` (in a batch with whatever else is waiting); returns once it committed."""
        if not self._tasks:
            raise RuntimeError("SendCoalescer is not started")
        waiting = _Waiting(send)
        self._waiting.append(waiting)
        self._wake.set()
        # Shielded: a caller that goes away (client disconnect) does not cancel the batch's
        # answer, which the other sends of the batch share nothing with anyway.
        return await asyncio.shield(waiting.answer)

    def _take(self) -> list[_Waiting]:
        """The oldest waiting sends, up to the caps (always at least one)."""
        taken = rows = 0
        for waiting in self._waiting:
            rows += len(waiting.send.dests)
            if taken and (taken >= self._max_sends or rows > self._max_rows):
                break
            taken += 1
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return batch

    async def _run(self) -> None:
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            batch = self._take()
            if self._waiting:
                self._wake.set()  # more than one batch's worth: another writer may start now
            self._busy += 1
            try:
                await self._write(batch)
            except Exception:  # noqa: BLE001 - answered per send in _write; never kill the writer
                log.exception("send coalescer: a batch could not be answered")
            finally:
                self._busy -= 1

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._commit([w.send for w in batch])
        except Exception as error:  # noqa: BLE001 - retried send by send below
            if len(batch) == 1:
                _fail(batch[0], error)
                return
            self.split += 1
            log.warning("send coalescer: a batch of %d sends failed (%s); writing them one by one", len(batch), error)
            for waiting in batch:
                try:
                    outcome = (await self._commit([waiting.send]))[0]
                except Exception as alone:  # noqa: BLE001 - that send's error is its caller's
                    _fail(waiting, alone)
                else:
                    _answer(waiting, outcome)
            return
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        for waiting, outcome in zip(batch, outcomes, strict=True):
            _answer(waiting, outcome)

    async def _commit(self, sends: Sequence[NewMessages]) -> list[Outcome]:
        async with self._sessions.begin() as session:  # commits on leaving
            return await SendRepository(session).send_many(sends)


def _answer(waiting: _Waiting, outcome: Outcome) -> None:
    if not waiting.answer.done():
        waiting.answer.set_result(outcome)


def _fail(waiting: _Waiting, error: BaseException) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(error)


async def coalescer_of(request: Request) -> SendCoalescer | None:
    """The API process's coalescer (None where the app runs without one)."""
    return getattr(request.app.state, "send_coalescer", None)


SendWriter = Annotated[SendCoalescer | None, Depends(coalescer_of)]
