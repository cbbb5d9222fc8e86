"""Concurrent sends written together: one transaction and one statement for many requests.

Each send is one statement either way (sms.repository), but a request's own transaction around
it costs a pool checkout and its ping, a BEGIN and a COMMIT: four round trips and the session's
bookkeeping, several times what the statement itself costs for one recipient. Under load the
API process is the bottleneck of single-recipient sends, so the API hands a send's rows to the
coalescer instead: a writer takes every send waiting at that moment (up to a cap) and writes them
with the one statement, then answers each request. Each writer holds its own connection in
autocommit (the statement is its own transaction: one round trip per batch), with JIT off and
custom plans only (repository._BIG_SEND) and its own `application_name`,
`messaging-send-writer`. Nothing waits on a timer: while one batch is being
written the next one gathers, so a lone send goes straight through and a busy API writes bigger
batches.

A request is answered only after its batch committed, as with its own transaction. When a batch
fails, its writer drops its connection and writes each of its sends again, alone, on a new one:
one send's error (or a deadlock) fails that send and no other, and a connection that died since
the last batch (a database restart) fails nothing.

Sends with an `Idempotency-Key` do not come here: their key row must commit with their messages
in the request's transaction (common.idempotency).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from common.db import BATCH_SERVER_SETTINGS
from common.db.held import HeldConnection
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from messaging.sms.repository import NewMessages, Outcome, SendRepository

log = logging.getLogger(__name__)

WRITER_APPLICATION_NAME = "messaging-send-writer"
# jit off and custom plans: see repository._BIG_SEND (a writer runs the statement for one
# destination and for 10,000 on the same connection).
WRITER_SERVER_SETTINGS = {"application_name": WRITER_APPLICATION_NAME, **BATCH_SERVER_SETTINGS}


@dataclass
class _Waiting:
    send: NewMessages
    answer: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SendCoalescer:
    """Writes the sends handed to `write` in batches; `writers` batches can be in flight at once
    (while one waits for its commit's flush, the next is written). `engine`: its connections are
    held by the writers (create it with WRITER_SERVER_SETTINGS and a pool of `writers`); it is
    the writers' alone, so their session settings never reach other code."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        writers: int = 2,
        max_sends: int = 500,
        max_rows: int = 5_000,
    ) -> None:
        self._engine = engine
        self._writers = writers
        self._max_sends = max_sends
        self._max_rows = max_rows
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.held: list[HeldConnection] = []  # the writers' connections
        self.batches = 0  # written batches (what the tests read)
        self.largest = 0  # most sends in one batch
        self.split = 0  # batches that failed and were written again send by send

    async def start(self) -> None:
        self._stopping = False
        self.held = [HeldConnection(self._engine, autocommit=True) for _ in range(self._writers)]
        self._tasks = [
            asyncio.create_task(self._run(held), name=f"send-coalescer-{i}") for i, held in enumerate(self.held)
        ]

    async def stop(self) -> None:
        """Writes what is waiting and lets the batches in flight finish, then stops."""
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for waiting in self._waiting:  # only if every writer died, which _run never lets happen
            _fail(waiting, RuntimeError("the send coalescer stopped"))
        self._waiting = []

    async def write(self, send: NewMessages) -> Outcome:
        """Store `send` (in a batch with whatever else is waiting); returns once it committed."""
        if not self._tasks or self._stopping:
            raise RuntimeError("SendCoalescer is not running")
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

    async def _run(self, held: HeldConnection) -> None:
        """One writer: batches until stopped with nothing left waiting."""
        try:
            while True:
                while not self._waiting:
                    if self._stopping:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                batch = self._take()
                if self._waiting or self._stopping:
                    self._wake.set()  # more to write, or time to stop: the other writers look too
                try:
                    await self._write(held, batch)
                except Exception:  # noqa: BLE001 - answered per send in _write; never kill the writer
                    log.exception("send coalescer: a batch could not be answered")
        finally:
            await held.release()  # the writers' own engine: their settings stay theirs

    async def _write(self, held: HeldConnection, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._commit(held, [w.send for w in batch])
        except Exception as error:  # noqa: BLE001 - retried send by send below
            # Each send again, alone, on a new connection: a bad send fails on its own, and a
            # connection that died since the last batch (a database restart) costs nothing. A
            # statement that did commit before its connection died cannot store twice: the
            # messages' and events' ids are the same and unique.
            if len(batch) > 1:
                self.split += 1
            log.warning("send coalescer: a batch of %d sends failed (%s); writing them one by one", len(batch), error)
            for waiting in batch:
                try:
                    outcome = (await self._commit(held, [waiting.send]))[0]
                except Exception as alone:  # noqa: BLE001 - that send's error is its caller's
                    _fail(waiting, alone)
                else:
                    _answer(waiting, outcome)
            return
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        for waiting, outcome in zip(batch, outcomes, strict=True):
            _answer(waiting, outcome)

    async def _commit(self, held: HeldConnection, sends: Sequence[NewMessages]) -> list[Outcome]:
        """One statement on the writer's connection, in autocommit: stored when it returns."""
        conn = await held.get()
        try:
            outcomes = await SendRepository(conn, tuned=True).send_many(sends)
            await conn.commit()  # ends SQLAlchemy's autobegun block; nothing is sent
        except BaseException:
            await held.discard()  # its state is unknown: the next statement gets a new one
            raise
        return outcomes


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
