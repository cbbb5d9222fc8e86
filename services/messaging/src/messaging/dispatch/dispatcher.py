"""The SMS dispatcher: claims due messages, hands them to the providers, records the outcomes.

A message is due while `next_attempt_at <= now()` (set by the billing reply `reserved`, by the
OTP consumer, or by a retry). One `Lane` per route (`standard`, `otp`), each with its own
claim loop and its own cap on provider calls in flight, so an OTP never waits behind a bulk send.

    claim (one transaction: lease + attempts+1, committed)
      -> send through the Router in provider batches of up to `send_batch` messages (one
         request each for the HTTP gateway), up to `concurrency` batches at a time, failover
         per message, per-provider token bucket charged per message
      -> record (one transaction per chunk of finished sends, two chunks at a time):
           accepted           -> sent   (status.apply, then status.resolve_pending)
           not accepted       -> failed (the provider answered but will not deliver)
           ProviderRejected   -> failed (permanent: bad number, ...)
           no provider now    -> back in the queue after a backoff, lease released;
                                 after sms_max_attempts -> failed ("no provider available")

A worker that dies between the claim and the record leaves leases that run out after
`sms_dispatch_lease_s`; the messages are then claimed and sent again with the same client
reference (the message id), which the provider uses to drop the repeat (a batch request too:
the gateway deduplicates per item). Claiming stops once `max_in_flight` messages are in flight:
for the bulk lane, `sms_dispatch_ahead_s` seconds of sending at the provider rate (at least two
claims' worth), and never more than half a lease's worth, so a claimed message is sent long
before its lease ends. With two claims' worth (400 messages, 0.4 s at 1,000/s), a claim that
stalled (35-270 ms measured while a bulk's holds and reports load the database) left the
provider's bucket with no batch waiting: 2.1 s of a 12.3 s bulk send, which went out at ~735/s
against a 1,000/s rate. With a second's worth, 1.4 s of 13.1 s (the rest is billing's holds
arriving slower than the rate at the start of a bulk).

Wake-ups: the billing-reply and OTP consumers set the lane's event after their transaction
commits; otherwise the lane polls, every `sms_dispatch_poll_s` while work is around and less
often (up to `IDLE_POLL_MAX_S`) when its route is empty, and never later than the next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.aio import wait_woken
from common.app import redis_client
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from messaging.dispatch import repository as repo
from messaging.dispatch.otp import redact as redact_otp
from messaging.dispatch.ratelimit import rate_limit
from messaging.providers.base import OutboundSms, ProviderRejected, ProviderUnavailable
from messaging.providers.registry import build_router
from messaging.providers.routing import Dispatched, Router
from messaging.settings import MessagingSettings
from messaging.sms import status as st

log = logging.getLogger("messaging.dispatch")

STANDARD, OTP = "standard", "otp"
OTP_SEND_BATCH = 10  # messages per provider call in the OTP lane: small, so codes go at once
RECORDERS = 2  # record transactions at once per lane
IDLE_POLL_MAX_S = 2.0
DEPTH_EVERY_S = 5.0

DISPATCHED = Counter(
    "sb_sms_dispatched_total",
    "Dispatch outcomes per route: sent, failed (provider refused or did not accept), retry, gave_up",
    ["route", "outcome"],
)
CLAIM_LAG = Histogram(
    "sb_sms_dispatch_claim_lag_seconds",
    "How long a message had been due when a dispatcher claimed it",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SEND_SECONDS = Histogram(
    "sb_sms_dispatch_send_seconds",
    "One provider batch through the router (rate limit wait and failover included)",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge("sb_sms_dispatch_queue_depth", "Messages waiting for the dispatcher, due now", ["route"])
WAITING = Gauge("sb_sms_dispatch_waiting", "Messages waiting for the dispatcher, due now or later", ["route"])
IN_FLIGHT = Gauge("sb_sms_dispatch_in_flight", "Claimed messages not yet recorded", ["route"])


@dataclass(frozen=True)
class Outcome:
    message: repo.Claimed
    kind: str  # sent | failed | retry | gave_up | expired
    change: st.Change | None = None  # sent, failed, gave_up
    delay_s: float = 0.0  # retry
    detail: str = ""  # retry: the history row's detail


def _expired(message: repo.Claimed, why: str | None = None) -> st.Change:
    detail = "expired before it could be sent" + (f" (last attempt: {why})" if why else "")
    return st.Change(message.id, st.FAILED, error="expired", detail=detail[:500])


def backoff_s(settings: MessagingSettings, attempts: int, retry_after_s: float | None = None) -> float:
    """Delay before the next attempt after `attempts` failed ones: base x 2^(attempts-1), capped,
    and never sooner than the provider asked (`Retry-After`)."""
    delay = min(settings.sms_retry_base_s * 2 ** max(0, attempts - 1), settings.sms_retry_max_s)
    if retry_after_s:
        delay = max(delay, min(retry_after_s, settings.sms_retry_max_s))
    return delay


def bulk_in_flight(settings: MessagingSettings) -> int:
    """The bulk lane's cap on claimed, unsent messages: `sms_dispatch_ahead_s` of sending at the
    provider rate, at least two claims' worth, at most half a lease at that rate (and one
    provider batch whatever the settings)."""
    rate = settings.sms_provider_rate_per_s
    ahead = max(2 * settings.sms_dispatch_batch, int(rate * settings.sms_dispatch_ahead_s))
    return max(settings.sms_dispatch_send_batch, min(ahead, int(rate * settings.sms_dispatch_lease_s / 2)))


def _failovers(dispatched: Dispatched) -> str:
    if not dispatched.attempts:
        return ""
    tried = ", ".join(f"{a.provider} {a.outcome}" + (f" ({a.error})" if a.error else "") for a in dispatched.attempts)
    return f" after {tried}"


class Lane:
    """Claims and sends the messages of one route."""

    def __init__(
        self,
        settings: MessagingSettings,
        sessions: async_sessionmaker[AsyncSession],
        router: Router,
        *,
        route: str,
        concurrency: int,
        batch: int | None = None,
        send_batch: int | None = None,
        wake: asyncio.Event | None = None,
        redact: Callable[[str], str] | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.router = router
        self.route = route
        self.concurrency = max(1, concurrency)  # provider calls (batches) in flight
        self.batch = max(1, batch or settings.sms_dispatch_batch)
        self.send_batch = max(1, min(self.batch, send_batch or settings.sms_dispatch_send_batch))
        # Messages claimed and not yet sent (see the module doc).
        self.max_in_flight = max(self.send_batch, max_in_flight or 2 * self.batch)
        # Claim in sizeable chunks: one claim per finished send would be a transaction per message.
        self.min_claim = max(1, min(self.batch, self.send_batch) // 2)
        self.wake = wake or asyncio.Event()
        self.redact = redact  # OTP: takes the code out of the stored body once it is gone
        self._sem = asyncio.Semaphore(self.concurrency)
        self._results: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._in_flight_messages = 0
        self._depth_at = 0.0

    # -- the claim loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        recorders = [
            asyncio.create_task(self._record_loop(), name=f"sms-record-{self.route}-{i}") for i in range(RECORDERS)
        ]
        log.info("sms dispatcher started", extra={"route": self.route, "concurrency": self.concurrency})
        idle = self.settings.sms_dispatch_poll_s
        errors = 0
        try:
            while not stop.is_set():
                room = self.max_in_flight - self._in_flight_messages
                if room < self.min_claim:
                    await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                # Cleared before the claim: a wake-up that lands during it triggers another pass.
                self.wake.clear()
                want = min(room, self.batch)
                try:
                    claimed = await self._claim(want)
                    await self._observe_depth()
                    errors = 0
                except Exception as exc:  # noqa: BLE001 - database away: retry, never exit
                    errors += 1
                    log.warning("sms claim failed, retrying", extra={"route": self.route, "error": repr(exc)})
                    await wait_woken(stop, self.wake, min(5.0, 0.2 * 2**errors))
                    continue
                claimed = self._drop_expired(claimed)
                for k in range(0, len(claimed), self.send_batch):
                    self._start(claimed[k:k + self.send_batch])
                IN_FLIGHT.labels(self.route).set(self._in_flight_messages)
                if len(claimed) == want:
                    idle = self.settings.sms_dispatch_poll_s
                    continue  # there may be more due right now
                idle = await self._idle_wait(stop, idle, busy=bool(claimed or self._in_flight))
        finally:
            if self._in_flight:
                # Let sends under way finish and be recorded; what does not make it is sent
                # again (same client reference) when its lease runs out.
                await asyncio.wait(self._in_flight, timeout=self.settings.sms_provider_timeout_s + 1)
            for _ in recorders:
                self._results.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*recorders), 10)
            IN_FLIGHT.labels(self.route).set(0)
            log.info("sms dispatcher stopped", extra={"route": self.route})

    def _drop_expired(self, claimed: list[repo.Claimed]) -> list[repo.Claimed]:
        """Messages past their expiry (an OTP code after an outage) fail as `expired`, unsent."""
        now = datetime.now(UTC)
        live = []
        for message in claimed:
            if message.expires_at is not None and message.expires_at <= now:
                self._results.put_nowait(Outcome(message, "expired", _expired(message)))
            else:
                live.append(message)
        return live

    async def _claim(self, n: int) -> list[repo.Claimed]:
        async with self.sessions() as session, session.begin():
            claimed = await repo.claim(session, self.route, n, self.settings.sms_dispatch_lease_s)
        for message in claimed:
            CLAIM_LAG.labels(self.route).observe(message.lag_s)
        return claimed

    async def _idle_wait(self, stop: asyncio.Event, idle: float, *, busy: bool) -> float:
        """Wait for a wake-up, the next retry, or the poll; answers the next idle interval."""
        poll = self.settings.sms_dispatch_poll_s
        if busy:
            wait, idle = poll, poll
        else:
            # Nothing claimed and nothing in flight: poll less and less often, but never past
            # the next message's due time.
            try:
                async with self.sessions() as session:
                    due_in = await repo.next_due_in(session, self.route)
            except Exception:  # noqa: BLE001
                due_in = None
            wait = idle if due_in is None else max(poll, min(idle, due_in))
            idle = min(IDLE_POLL_MAX_S, idle * 2)
        if await wait_woken(stop, self.wake, wait):
            return poll  # woken: work arrived
        return idle

    async def _observe_depth(self) -> None:
        now = time.monotonic()
        if now - self._depth_at < DEPTH_EVERY_S:
            return
        self._depth_at = now
        async with self.sessions() as session:
            due, waiting = await repo.depth(session, self.route)
        QUEUE_DEPTH.labels(self.route).set(due)
        WAITING.labels(self.route).set(waiting)

    # -- sending -------------------------------------------------------------------------------

    def _start(self, messages: list[repo.Claimed]) -> None:
        task = asyncio.create_task(self._send(messages))
        self._in_flight.add(task)
        self._in_flight_messages += len(messages)

        def done(t: asyncio.Task[None], n: int = len(messages)) -> None:
            self._in_flight.discard(t)
            self._in_flight_messages -= n

        task.add_done_callback(done)

    async def _send(self, messages: list[repo.Claimed]) -> None:
        async with self._sem:
            started = time.monotonic()
            try:
                results: list = await self.router.send_many(
                    [OutboundSms(m.to, m.body, str(m.id), m.sender) for m in messages]
                )
            except Exception as exc:  # noqa: BLE001 - a bug: every message of the batch tries later
                log.exception("sms batch send raised unexpectedly", extra={"count": len(messages)})
                results = [exc] * len(messages)
            SEND_SECONDS.labels(self.route).observe(time.monotonic() - started)
        for message, result in zip(messages, results, strict=True):
            self._results.put_nowait(self._outcome(message, result))

    def _outcome(self, message: repo.Claimed, result: Dispatched | BaseException) -> Outcome:
        if isinstance(result, ProviderRejected):
            return Outcome(
                message, "failed",
                st.Change(message.id, st.FAILED, detail=f"refused by {result.provider}", provider=result.provider,
                          error=str(result)),
            )
        if isinstance(result, BaseException):  # not now (NoProviderAvailable) or a bug: try later
            why = str(result) if isinstance(result, ProviderUnavailable) else repr(result)
            if message.attempts >= self.settings.sms_max_attempts:
                return Outcome(
                    message, "gave_up",
                    st.Change(message.id, st.FAILED, error="no provider available",
                              detail=f"gave up after {message.attempts} attempts: {why}"),
                )
            delay = backoff_s(self.settings, message.attempts, getattr(result, "retry_after_s", None))
            if message.expires_at is not None and datetime.now(UTC) + timedelta(seconds=delay) >= message.expires_at:
                return Outcome(message, "expired", _expired(message, why))
            return Outcome(
                message, "retry", delay_s=delay,
                detail=f"attempt {message.attempts}: {why}; next attempt in {delay:g}s",
            )
        dispatched = result
        sent = dispatched.result
        if sent.accepted:
            return Outcome(
                message, "sent",
                st.Change(message.id, st.SENT, detail=f"accepted by {dispatched.provider}{_failovers(dispatched)}",
                          provider=dispatched.provider, provider_message_id=sent.provider_message_id),
            )
        return Outcome(
            message, "failed",
            st.Change(message.id, st.FAILED,
                      detail=f"not accepted by {dispatched.provider}{_failovers(dispatched)}",
                      provider=dispatched.provider, provider_message_id=sent.provider_message_id,
                      error=f"{dispatched.provider}: {sent.status or 'not accepted'}"),
        )

    # -- recording -----------------------------------------------------------------------------

    async def _record_loop(self) -> None:
        """Writes finished sends in chunks: whatever finished while the previous chunk was
        being written goes into the next one (no lingering, so an OTP is recorded at once).
        `RECORDERS` of these run side by side, so one chunk's database round trips overlap the
        next one's (the chunks hold other messages; the status update locks rows in id order)."""
        done = False
        while not done:
            first = await self._results.get()
            if first is None:
                break
            chunk = [first]
            while len(chunk) < self.batch and not self._results.empty():
                item = self._results.get_nowait()
                if item is None:
                    done = True
                    break
                chunk.append(item)
            await self._record_with_retry(chunk, final=done)

    async def _record_with_retry(self, chunk: list[Outcome], *, final: bool) -> None:
        backoff = 0.2
        for attempt in range(1, 1000):
            try:
                started = time.monotonic()
                await self.record(chunk)
            except Exception as exc:  # noqa: BLE001 - database away: keep the outcomes, retry
                log.warning(
                    "sms outcomes not recorded, retrying",
                    extra={"route": self.route, "count": len(chunk), "error": repr(exc), "attempt": attempt},
                )
                if final and attempt >= 3:
                    return  # shutting down: the leases run out and the messages go again
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            tally = Tally(o.kind for o in chunk)
            for kind, n in tally.items():
                DISPATCHED.labels(self.route, kind).inc(n)
            log.info(
                "sms batch recorded",
                extra={"route": self.route, "count": len(chunk), **dict(tally),
                       "record_ms": round((time.monotonic() - started) * 1000, 1)},
            )
            return

    async def record(self, chunk: list[Outcome]) -> None:
        """The outcomes of finished sends, in one transaction."""
        async with self.sessions() as session, session.begin():
            changes = [o.change for o in chunk if o.change is not None]
            await st.apply(session, changes)
            sent = [
                (o.message.id, o.change.provider, o.change.provider_message_id)
                for o in chunk
                if o.change is not None and o.change.provider and o.change.provider_message_id
            ]
            # Reports that beat us to it (parked by provider id) apply now that the id is known.
            await st.resolve_pending(session, sent)  # type: ignore[arg-type]
            retries = [o for o in chunk if o.kind == "retry"]
            still_ours = await repo.schedule_retry(
                session, [(o.message.id, o.message.attempts, o.delay_s) for o in retries]
            )
            await st.record_history(
                session, [(o.message.id, st.QUEUED, o.detail) for o in retries if o.message.id in still_ours]
            )
            if self.redact is not None:
                finished = [o.message for o in chunk if o.kind != "retry"]
                await repo.set_bodies(session, [(m.id, self.redact(m.body)) for m in finished])


class Dispatcher:
    """The worker's runner: one router (rate-limited per provider) shared by the standard and
    OTP lanes. `wake(route)` is what the consumers call after they commit."""

    def __init__(
        self,
        settings: MessagingSettings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        router_factory: Callable[[MessagingSettings], Router] = build_router,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.router_factory = router_factory
        self.wakes = {STANDARD: asyncio.Event(), OTP: asyncio.Event()}

    def wake(self, route: str) -> None:
        event = self.wakes.get(route)
        if event is not None:
            event.set()

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        # The provider buckets, shared by every worker process. Short timeouts and no retries:
        # a bucket that cannot reach Redis paces in-process for a while instead of waiting.
        redis = redis_client(s, timeout_s=1, retries=0)
        router = rate_limit(self.router_factory(s), s.sms_provider_rate_per_s, redis)
        lanes = [
            Lane(s, self.sessions, router, route=STANDARD, concurrency=s.sms_dispatch_concurrency,
                 wake=self.wakes[STANDARD], max_in_flight=bulk_in_flight(s)),
            Lane(s, self.sessions, router, route=OTP, concurrency=s.sms_otp_concurrency,
                 batch=max(1, min(s.sms_dispatch_batch, s.sms_otp_concurrency * 2)),
                 send_batch=OTP_SEND_BATCH,
                 wake=self.wakes[OTP], redact=lambda body: redact_otp(body, s.sms_otp_text)),
        ]
        try:
            async with asyncio.TaskGroup() as tg:
                for lane in lanes:
                    tg.create_task(lane.run(stop))
        finally:
            await router.aclose()
            await redis.aclose()

