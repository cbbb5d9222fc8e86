"""Provider routing: pick providers by destination country, fail over, and stop sending to a
provider that keeps failing (a circuit breaker per provider).

Routes map an ISO country code (`US`, `DE`, ...) to an ordered list of provider names; `*` is the
list for every other country (and for numbers whose country cannot be told). `send` tries the
list in order:

- `ProviderUnavailable` -> record a failure on that provider's breaker, try the next one;
- `ProviderRejected` -> stop: the message itself is refused, another provider would refuse it
  too (the provider did answer, so it counts as a success for its breaker);
- a provider whose breaker is open is skipped without a call;
- if every candidate failed or was skipped: `NoProviderAvailable` (itself a
  `ProviderUnavailable`, so the caller retries the message later).

`send_many` does the same for a batch of messages, per message (`send` is `send_many` of one): the messages are grouped by
their route, each group goes to its first provider in calls of at most the provider's
`max_batch` (`SmsProvider.send_many`, one request per call for the HTTP gateway), and only the
messages that came back unavailable (one by one, or the whole call) go on to the next provider.
A message's outcome is `Dispatched`, `ProviderRejected` or `NoProviderAvailable`, answered in
the order given (returned, not raised). One call is one event for the breaker (a success if the
provider took or refused at least one of its messages, a failure if the call failed or every
message came back unavailable), and every call acquires the breaker on its own: in half-open,
one call is the trial and the group's other calls skip the provider.

Breaker: closed until `failure_threshold` consecutive `ProviderUnavailable`; then open for
`open_for_s` seconds (every send skips it); then half-open: exactly one send is let through as a
trial (concurrent sends keep skipping it); its success closes the breaker, its failure opens it for
another `open_for_s`.

Breaker state lives in this process only: each API/worker process learns on its own that a
provider is down (at most `failure_threshold` failed sends each). Sharing it through Redis is a
later step. The clock is injectable so tests can move time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from common.phones import region_of
from prometheus_client import Counter, Gauge

from messaging.providers.base import (
    OutboundSms,
    ProviderRejected,
    ProviderUnavailable,
    SendResult,
    SmsProvider,
)

log = logging.getLogger("messaging.providers.routing")

DEFAULT_ROUTE = "*"

PROVIDER_SENDS = Counter(
    "sb_sms_provider_sends_total",
    "SMS send attempts per provider, by outcome (accepted, not_accepted, rejected, unavailable, skipped)",
    ["provider", "outcome"],
)
BREAKER_STATE = Gauge(
    "sb_sms_provider_breaker_state", "Circuit breaker per SMS provider: 0 closed, 1 open, 2 half-open", ["provider"]
)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_GAUGE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        open_for_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or open_for_s <= 0:
            raise ValueError("a breaker needs failure_threshold >= 1 and open_for_s > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_for_s = open_for_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.open_for_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def try_acquire(self) -> bool:
        """Whether a send may go to this provider now; in half-open, only the one trial may."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            self._publish(state)
            return True
        return False

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.info("sms provider breaker closed", extra={"provider": self.name})
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False
        self._publish(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        trial = self._trial_in_flight
        self._trial_in_flight = False
        if trial or (self._opened_at is None and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            log.warning(
                "sms provider breaker opened",
                extra={"provider": self.name, "failures": self._failures, "open_for_s": self.open_for_s},
            )
            self._publish(BreakerState.OPEN)

    def release(self) -> None:
        """A send that ended without telling anything (cancelled): free the trial slot."""
        self._trial_in_flight = False

    def _publish(self, state: BreakerState) -> None:
        BREAKER_STATE.labels(self.name).set(_GAUGE[state])


@dataclass(frozen=True)
class Attempt:
    provider: str
    outcome: str  # unavailable | skipped
    error: str | None = None
    retry_after_s: float | None = None  # unavailable: the provider's Retry-After, if it gave one


@dataclass(frozen=True)
class Dispatched:
    provider: str  # the provider that took the message
    result: SendResult
    attempts: tuple[Attempt, ...] = ()  # providers tried or skipped before it


class NoProviderAvailable(ProviderUnavailable):
    """Every provider of the route failed or has an open breaker; retry the message later.

    `retry_after_s`: when every provider called asked for a wait (Retry-After), the shortest of
    them (none sooner could take the message); otherwise None."""

    def __init__(self, country: str, attempts: Sequence[Attempt], *, maybe_sent: bool = False) -> None:
        self.country = country
        self.attempts = tuple(attempts)
        tried = ", ".join(f"{a.provider} ({a.outcome})" for a in attempts) or "none configured"
        waits = [a.retry_after_s for a in self.attempts if a.outcome == "unavailable"]
        super().__init__(
            "router", f"no provider took the message for {country}: {tried}", code="NO_PROVIDER",
            retry_after_s=min(waits) if waits and None not in waits else None,  # type: ignore[type-var]
            maybe_sent=maybe_sent,
        )


def _country(to: str) -> str:
    """The ISO country of `to`, `*` when it cannot be told (the default route; the provider decides)."""
    try:
        return region_of(to) or DEFAULT_ROUTE
    except Exception:  # noqa: BLE001
        return DEFAULT_ROUTE


class Router:
    def __init__(
        self,
        providers: Mapping[str, SmsProvider],
        routes: Mapping[str, Sequence[str]],
        *,
        failure_threshold: int = 5,
        open_for_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        routes = {k.upper() if k != DEFAULT_ROUTE else k: list(v) for k, v in routes.items()}
        unknown = {name for names in routes.values() for name in names} - set(providers)
        if unknown:
            raise ValueError(f"SMS routes name unknown providers: {sorted(unknown)}")
        self.providers = dict(providers)
        self.routes = routes
        # Only `*` routed (the local stack's and a deployment's default): every number goes the
        # same way, so its country is not looked up per message (parsing a number is ~70 us:
        # 7% of the worker's CPU in a bulk send); it is told only in a no-provider error.
        self._one_route = routes[DEFAULT_ROUTE] if set(routes) == {DEFAULT_ROUTE} else None
        self.breakers = {
            name: CircuitBreaker(name, failure_threshold=failure_threshold, open_for_s=open_for_s, clock=clock)
            for name in providers
        }

    def candidates(self, to: str) -> tuple[str, list[str]]:
        """The destination country of `to` (or `*`: not known, or not needed because every
        country goes the same way) and its ordered provider names."""
        if self._one_route is not None:
            return DEFAULT_ROUTE, self._one_route
        country = _country(to)
        names = self.routes.get(country)
        if names is None:
            names = self.routes.get(DEFAULT_ROUTE, [])
        return country, names

    async def send(
        self, to: str, text: str, client_ref: str, sender: str | None = None
    ) -> Dispatched:
        """Send one message: `send_many` of one, its outcome raised when it is an error.

        Raises `ProviderRejected` (permanent) or `NoProviderAvailable` (retry later)."""
        [outcome] = await self.send_many([OutboundSms(to, text, client_ref, sender)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def send_many(
        self, messages: Sequence[OutboundSms]
    ) -> list[Dispatched | ProviderRejected | NoProviderAvailable]:
        """Send a batch, failing over per message; one outcome per message, in order (never
        raises for a provider's answer)."""
        outcomes: list[Dispatched | ProviderRejected | NoProviderAvailable | None] = [None] * len(messages)
        groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for i, m in enumerate(messages):
            country, names = self.candidates(m.to)
            groups.setdefault((country, tuple(names)), []).append(i)
        await asyncio.gather(
            *(self._send_group(messages, indexes, country, names, outcomes)
              for (country, names), indexes in groups.items())
        )
        return outcomes  # type: ignore[return-value]  (every slot is filled)

    async def _send_group(
        self,
        messages: Sequence[OutboundSms],
        pending: list[int],
        country: str,
        names: Sequence[str],
        outcomes: list,  # noqa: ANN001 - filled in place
    ) -> None:
        attempts: dict[int, list[Attempt]] = {i: [] for i in pending}
        maybe_sent: set[int] = set()
        for name in names:
            if not pending:
                break
            provider = self.providers[name]
            size = max(1, provider.max_batch)
            chunks = [pending[k:k + size] for k in range(0, len(pending), size)]
            left = await asyncio.gather(
                *(self._call(name, messages, chunk, attempts, maybe_sent, outcomes) for chunk in chunks)
            )
            pending = [i for chunk in left for i in chunk]
        for i in pending:
            told = _country(messages[i].to) if country == DEFAULT_ROUTE else country
            outcomes[i] = NoProviderAvailable(told, attempts[i], maybe_sent=i in maybe_sent)

    async def _call(
        self,
        name: str,
        messages: Sequence[OutboundSms],
        chunk: list[int],
        attempts: dict[int, list[Attempt]],
        maybe_sent: set[int],
        outcomes: list,  # noqa: ANN001 - filled in place
    ) -> list[int]:
        """One provider call for `chunk` (indexes into `messages`): fills the outcomes of the
        messages it settled and answers the indexes still to place elsewhere."""
        breaker = self.breakers[name]
        if not breaker.try_acquire():
            PROVIDER_SENDS.labels(name, "skipped").inc(len(chunk))
            skipped = Attempt(name, "skipped", f"breaker {breaker.state}")
            for i in chunk:
                attempts[i].append(skipped)
            return chunk
        try:
            results = await self.providers[name].send_many([messages[i] for i in chunk])
            if len(results) != len(chunk):
                raise ProviderUnavailable(name, f"{len(results)} outcomes for {len(chunk)} messages",
                                          code="BAD_ANSWER", maybe_sent=True)
        except ProviderUnavailable as exc:
            breaker.record_failure()
            PROVIDER_SENDS.labels(name, "unavailable").inc(len(chunk))
            failed = Attempt(name, "unavailable", str(exc), exc.retry_after_s)
            for i in chunk:
                attempts[i].append(failed)
                if exc.maybe_sent:
                    maybe_sent.add(i)
            log.warning(
                "sms provider unavailable for a batch, failing over",
                extra={"provider": name, "error": str(exc), "count": len(chunk)},
            )
            return chunk
        except BaseException:
            breaker.release()
            raise
        left: list[int] = []
        tally = {"accepted": 0, "not_accepted": 0, "rejected": 0, "unavailable": 0}
        for i, result in zip(chunk, results, strict=True):
            if isinstance(result, SendResult):
                tally["accepted" if result.accepted else "not_accepted"] += 1
                outcomes[i] = Dispatched(provider=name, result=result, attempts=tuple(attempts[i]))
            elif isinstance(result, ProviderRejected):
                tally["rejected"] += 1
                outcomes[i] = result
            else:  # ProviderUnavailable for this message alone
                tally["unavailable"] += 1
                attempts[i].append(Attempt(name, "unavailable", str(result), result.retry_after_s))
                if result.maybe_sent:
                    maybe_sent.add(i)
                left.append(i)
        # It answered for its messages: fine, unless it took none of them.
        if tally["unavailable"] == len(chunk):
            breaker.record_failure()
        else:
            breaker.record_success()
        for outcome, n in tally.items():
            if n:
                PROVIDER_SENDS.labels(name, outcome).inc(n)
        if left:
            log.warning(
                "sms provider unavailable for some messages of a batch, failing over",
                extra={"provider": name, "count": len(left), "of": len(chunk)},
            )
        return left

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
