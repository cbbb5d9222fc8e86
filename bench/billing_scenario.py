"""Scenario "billing" (issue 4): holds per second through Kafka, event in -> ledger commit ->
reply event out, against a raw asyncpg loop writing the same rows, in the same run. See
bench/README.md.

The real billing worker (`billing-worker` under the devstack supervisor, consumer group
`billing-holds`) is what is measured; this process plays messaging's part, as
tests/test_billing_sagas.py does: it publishes messaging.sms.requested.v1 CloudEvents to
`messaging.sms` with the factory producer and reads the replies on `billing.credits` with a
consumer of its own that starts at the end of the topic.

  1. setup: a pricing rule of this run's own (kind sms, country IS, a unique route, fixed price
     7, inserted as superuser) and, per phase, a fresh tenant funded through the ledger service
     in-process (account_for(create=True) + credit(kind "adjustment", counter "adjustments"))
     with exactly what its holds need;
  2. raw baseline: a raw asyncpg loop writing what one hold writes (one inbox-like row, the
     account's held_minor update, one holds row, one outbox-like row), one transaction per
     event, into scratch tables of the `bench` schema: 1 writer, then 3 concurrent writers (the
     consumer handles its 3 partitions side by side);
  3. warm-up (not measured), then throughput: N requests published as fast as the producer
     takes them, until N replies have arrived (bounded); holds/s = N / (first send -> last
     reply); latency per event = reply arrival - send;
  4. paced: for each of --billing-rate (requests/s, comma-separated) for
     --billing-paced-seconds, latency percentiles, per second too;
  5. after each phase: exactly N holds for the tenant, held_minor = N x price, one inbox row per
     request, one reply per request, and LedgerRepository.invariants() all zero;
  6. where the time goes: per-event stages from the rows' own timestamps and the Kafka record
     timestamps, the worker's and PostgreSQL's CPU per hold, and the hold handler alone, run
     in-process in a transaction that is rolled back (nothing of it is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
from billing.holds.handlers import on_sms_requested
from billing.ledger import service as ledger
from billing.ledger.repository import LedgerRepository
from billing.settings import BillingSettings
from common.contracts.envelope import EventEnvelope
from common.contracts.messaging.v1 import SmsRequestedV1
from common.db import create_engine, create_session_factory
from common.messaging.kafka import make_consumer, make_producer
from common.messaging.relay import HEADERS
from common.settings import BaseServiceSettings
from shared import (
    DATABASE,
    HOST,
    KAFKA_PORT,
    PG_PORT,
    ROOT,
    SCHEMA,
    CpuMeter,
    Deadline,
    _postgres_pids,
    cpu_seconds,
    latency_by_second,
    paced,
    percentiles,
    service_pid,
    superuser,
)
from sqlalchemy import event as sa_event
from sqlalchemy import text

GOAL_RATIO = 0.30
REQUEST_TOPIC = "messaging.sms"
REQUEST_TYPE = "messaging.sms.requested.v1"
REPLY_TOPIC = "billing.credits"
RESERVED = "billing.credits.reserved.v1"
REJECTED = "billing.credits.rejected.v1"
HOLDS_GROUP = "billing-holds"
WORKER = "billing-worker"
WORKER_LOG = ROOT / ".local" / "logs" / "billing-worker.log"
PRICE = 7
COUNTRY = "IS"
PHONE = "+3545551234"
WARMUP_EVENTS = 100
RAW_WRITERS = 3  # the topic's partitions: the consumer handles them side by side
RAW_SECONDS_CAP = 8.0
# Events handled by the worker for others (other people's tests) during the run, above which
# the scenario counts as noisy: the worker's CPU was not all ours.
NOISY_FOREIGN_EVENTS = 50


class BenchError(RuntimeError):
    pass


def log_step(message: str) -> None:
    print(f"  [billing] {message}", file=sys.stderr, flush=True)


def kafka_settings() -> BaseServiceSettings:
    return BaseServiceSettings(
        service_name="bench-messaging",
        kafka_bootstrap=f"{HOST}:{KAFKA_PORT}",
        kafka_session_timeout_ms=6000,
        log_level="WARNING",
    )


def billing_settings() -> BillingSettings:
    return BillingSettings(db_pool_size=4, log_level="WARNING")


def request_record(tenant: str, message_id: str, route: str, event_id: str, sent_at: float) -> bytes:
    """messaging.sms.requested.v1 as messaging's relay would publish it; `time` = send time."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "/switchboard/messaging",
            "type": REQUEST_TYPE,
            "time": datetime.fromtimestamp(sent_at, UTC).isoformat(),
            "subject": message_id,
            "datacontenttype": "application/json",
            "tenantid": tenant,
            "data": {
                "messageId": message_id,
                "tenantId": tenant,
                "to": PHONE,
                "country": COUNTRY,
                "segments": 1,
                "route": route,
            },
        }
    ).encode()


# -- the reply side ---------------------------------------------------------------------------


class ReplyTap:
    """Reads billing.credits from its end (a group of its own, like tests/support.py EventTap)
    and records, for the tenants it watches, each reply's arrival time, type and Kafka
    timestamp (CreateTime: when the worker's relay sent it)."""

    def __init__(self, group: str, marker: str) -> None:
        self.consumer = make_consumer(kafka_settings(), group, REPLY_TOPIC)
        self.marker = marker.encode()  # every tenant of this run contains it: cheap pre-filter
        self.replies: dict[str, dict[str, tuple[float, str, float]]] = {}
        self.duplicates: dict[str, int] = {}
        self.targets: dict[str, tuple[int, asyncio.Event]] = {}
        self.records_read = 0
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self, limit_s: float) -> None:
        await asyncio.wait_for(self.consumer.start(), limit_s)
        end = time.monotonic() + limit_s
        while not self.consumer.assignment():
            if time.monotonic() > end:
                raise BenchError("the reply consumer got no partitions of billing.credits")
            await self.consumer.getmany(timeout_ms=200)
        for tp in self.consumer.assignment():
            await self.consumer.seek_to_end(tp)
            await self.consumer.position(tp)
        self.task = asyncio.create_task(self._run(), name="reply-tap")

    def watch(self, tenant: str, expected: int) -> None:
        self.replies[tenant] = {}
        self.duplicates[tenant] = 0
        self.targets[tenant] = (expected, asyncio.Event())

    def expect(self, tenant: str, expected: int) -> None:
        """Change the expected count (paced: what was actually sent)."""
        event = self.targets[tenant][1]
        self.targets[tenant] = (expected, event)
        if len(self.replies[tenant]) >= expected:
            event.set()

    async def _run(self) -> None:
        while not self.stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    self.records_read += 1
                    if self.marker not in record.value:
                        continue
                    try:
                        envelope = json.loads(record.value)
                        data = envelope.get("data") or {}
                    except (ValueError, AttributeError):
                        continue
                    seen = self.replies.get(data.get("tenantId"))
                    if seen is None:
                        continue
                    tenant, ref = data["tenantId"], data.get("reference")
                    if ref in seen:
                        self.duplicates[tenant] += 1
                        continue
                    seen[ref] = (now, envelope.get("type"), record.timestamp / 1000.0)
                    expected, done = self.targets[tenant]
                    if len(seen) >= expected:
                        done.set()

    async def wait(self, tenant: str, limit_s: float) -> bool:
        assert self.task is not None
        done = self.targets[tenant][1]
        waiter = asyncio.create_task(done.wait())
        try:
            await asyncio.wait({waiter, self.task}, timeout=max(0.0, limit_s), return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        if self.task.done():
            exc = None if self.task.cancelled() else self.task.exception()
            raise BenchError(f"the reply consumer stopped: {exc!r}")
        return done.is_set()

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except Exception:  # noqa: BLE001
                self.task.cancel()
        await asyncio.wait_for(self.consumer.stop(), 10)


# -- the worker: pid, log, foreign load -------------------------------------------------------


class WorkerWatch:
    """Did the billing worker restart, or log warnings/errors of its consumers, relay or Kafka
    client, while the scenario ran? (Its JSON log: .local/logs/billing-worker.log.)"""

    LEVEL = re.compile(rb'"level": "(WARNING|ERROR|CRITICAL)"')

    def __init__(self) -> None:
        self.pid = service_pid(WORKER)
        try:
            self.offset = WORKER_LOG.stat().st_size
        except OSError:
            self.offset = None

    def verdict(self) -> dict[str, Any]:
        pid = service_pid(WORKER)
        counts: Counter[str] = Counter()
        first: list[str] = []
        rotated = False
        if self.offset is not None:
            try:
                size = WORKER_LOG.stat().st_size
                start = self.offset
                if size < start:  # rotated meanwhile: read the new file from its start
                    rotated, start = True, 0
                with open(WORKER_LOG, "rb") as f:
                    f.seek(start)
                    tail = f.read(64 * 1024 * 1024)
                for line in tail.splitlines():
                    if not self.LEVEL.search(line):
                        continue
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    key = f"{rec.get('logger')}:{rec.get('level')}"
                    counts[key] += 1
                    if counts[key] <= 3 and len(first) < 10:
                        first.append(f"{rec.get('level')} {rec.get('logger')}: {rec.get('msg')}"[:300])
            except OSError:
                pass
        problems = {k: v for k, v in counts.items() if k.startswith(("aiokafka", "common"))}
        return {
            "worker_pid_before": self.pid,
            "worker_pid_after": pid,
            "worker_restarted": self.pid is None or pid != self.pid,
            "worker_log_counts": dict(counts),
            "worker_log_first": first,
            "worker_log_rotated": rotated,
            "disturbed": self.pid is None or pid != self.pid or bool(problems),
        }


async def foreign_load(since: datetime, tenants: list[str], our_event_ids: int) -> dict[str, Any]:
    """What the worker handled for others meanwhile (other people's tests share the worker)."""
    conn = await superuser()
    try:
        rows = await conn.fetch(
            "SELECT consumer_group, count(*) AS n FROM billing.inbox WHERE received_at >= $1 "
            "GROUP BY consumer_group",
            since,
        )
        other_holds = await conn.fetchval(
            "SELECT count(*) FROM billing.holds h JOIN billing.accounts a ON a.id = h.account_id "
            "WHERE h.created_at >= $1 AND NOT (a.tenant_id = ANY($2::text[]))",
            since,
            tenants,
        )
    finally:
        await conn.close()
    by_group = {r["consumer_group"]: r["n"] for r in rows}
    foreign = sum(by_group.values()) - our_event_ids
    return {
        "inbox_rows_by_group": by_group,
        "foreign_events_handled": max(0, foreign),
        "foreign_holds_placed": other_holds,
    }


# -- setup ------------------------------------------------------------------------------------


async def add_pricing_rule(route: str) -> str:
    conn = await superuser()
    try:
        return str(
            await conn.fetchval(
                "INSERT INTO billing.pricing_rules (id, kind, country, route, currency, "
                "fixed_price_minor) VALUES (gen_random_uuid(), 'sms', $1, $2, 'USD', $3) "
                "RETURNING id",
                COUNTRY,
                route,
                PRICE,
            )
        )
    finally:
        await conn.close()


async def remove_pricing_rule(rule_id: str) -> None:
    conn = await superuser()
    try:
        await conn.execute("DELETE FROM billing.pricing_rules WHERE id = $1::uuid", rule_id)
    finally:
        await conn.close()


async def fund(sessions, settings: BillingSettings, tenant: str, amount: int) -> None:  # noqa: ANN001
    async with sessions() as s, s.begin():
        account = await ledger.account_for(s, tenant, settings.default_currency, create=True)
        assert account is not None
        await ledger.credit(
            s,
            account,
            amount,
            business_key=f"fund:{tenant}",
            kind="adjustment",
            counter_account="adjustments",
            description="bench funding",
        )


async def outbox_backlog() -> dict[str, Any]:
    conn = await superuser()
    try:
        unpublished = await conn.fetchval(
            "SELECT count(*) FROM billing.outbox WHERE published_at IS NULL"
        )
        oldest = await conn.fetchval(
            "SELECT extract(epoch FROM now() - min(created_at))::float8 FROM billing.outbox "
            "WHERE published_at IS NULL"
        )
    finally:
        await conn.close()
    return {"unpublished": unpublished, "oldest_unpublished_s": round(oldest, 1) if oldest else None}


# -- raw baseline -----------------------------------------------------------------------------

RAW_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.billing_accounts (
        id uuid PRIMARY KEY, tenant_id varchar(64) UNIQUE, currency varchar(3) NOT NULL,
        balance_minor bigint NOT NULL DEFAULT 0, held_minor bigint NOT NULL DEFAULT 0,
        opened_by_event varchar(128), created_at timestamptz NOT NULL DEFAULT now(),
        kind varchar(16) NOT NULL DEFAULT 'customer', code varchar(64) UNIQUE,
        CHECK (kind <> 'customer' OR balance_minor - held_minor >= 0),
        CHECK (held_minor >= 0),
        CHECK (kind = 'customer' AND tenant_id IS NOT NULL
               OR kind = 'system' AND code IS NOT NULL AND held_minor = 0))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.billing_holds (
        id uuid PRIMARY KEY,
        account_id uuid NOT NULL REFERENCES {SCHEMA}.billing_accounts (id),
        business_key varchar(200) NOT NULL UNIQUE, kind varchar(24) NOT NULL,
        reference varchar(128), amount_minor bigint NOT NULL CHECK (amount_minor > 0),
        status varchar(12) NOT NULL DEFAULT 'held'
            CHECK (status IN ('held', 'captured', 'released')),
        transaction_id uuid, created_at timestamptz NOT NULL DEFAULT now(), settled_at timestamptz)""",
    f"CREATE INDEX IF NOT EXISTS ix_billing_holds_account_id ON {SCHEMA}.billing_holds (account_id)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.billing_inbox (
        consumer_group varchar(128) NOT NULL, event_id varchar(128) NOT NULL,
        event_type varchar(128) NOT NULL, outcome varchar(16) NOT NULL DEFAULT 'handled',
        received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer_group, event_id))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.billing_outbox (
        id bigserial PRIMARY KEY, event_id varchar(128) NOT NULL UNIQUE,
        event_type varchar(128) NOT NULL, topic varchar(128) NOT NULL, key varchar(256) NOT NULL,
        envelope jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz, attempts integer NOT NULL DEFAULT 0, last_error text)""",
    f"CREATE INDEX IF NOT EXISTS ix_billing_outbox_unpublished ON {SCHEMA}.billing_outbox (id) "
    "WHERE published_at IS NULL",
    # the statement-level NOTIFY trigger every service's outbox has (nobody listens here)
    f"""CREATE OR REPLACE FUNCTION {SCHEMA}.billing_outbox_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{SCHEMA}_billing_outbox', ''); RETURN NULL;
        END $$""",
    f"DROP TRIGGER IF EXISTS billing_outbox_notify ON {SCHEMA}.billing_outbox",
    f"""CREATE TRIGGER billing_outbox_notify AFTER INSERT ON {SCHEMA}.billing_outbox
        FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.billing_outbox_notify()""",
]
RAW_INBOX = (
    f"INSERT INTO {SCHEMA}.billing_inbox (consumer_group, event_id, event_type, outcome) "
    "VALUES ($1, $2, $3, 'handled') ON CONFLICT DO NOTHING RETURNING event_id"
)
RAW_RESERVE = (
    f"UPDATE {SCHEMA}.billing_accounts SET held_minor = held_minor + $2 "
    "WHERE id = $1 AND balance_minor - held_minor >= $2 RETURNING id"
)
RAW_HOLD = (
    f"INSERT INTO {SCHEMA}.billing_holds (id, account_id, business_key, kind, reference, "
    "amount_minor) VALUES ($1, $2, $3, 'sms', $4, $5)"
)
RAW_OUTBOX = (
    f"INSERT INTO {SCHEMA}.billing_outbox (event_id, event_type, topic, key, envelope) "
    "VALUES ($1, $2, $3, $4, $5::jsonb)"
)


def reply_envelope(tenant: str, message_id: str, hold_id: uuid.UUID) -> str:
    """What the worker's reply outbox row holds (billing.credits.reserved.v1), same shape."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/switchboard/billing",
            "type": RESERVED,
            "time": datetime.now(UTC).isoformat(),
            "subject": message_id,
            "datacontenttype": "application/json",
            "tenantid": tenant,
            "traceparent": None,
            "requestid": None,
            "data": {
                "reference": message_id,
                "referenceKind": "sms",
                "tenantId": tenant,
                "holdId": str(hold_id),
                "amountMinor": PRICE,
                "currency": "USD",
            },
        }
    )


async def raw_connect() -> asyncpg.Connection:
    return await asyncpg.connect(
        host=HOST, port=PG_PORT, user=SCHEMA, password=SCHEMA, database=DATABASE, timeout=10
    )


async def raw_writer(
    conn: asyncpg.Connection,
    indices: range,
    prefix: str,
    tenant: str,
    account_id: uuid.UUID,
    stop_at: float,
) -> tuple[int, int, list[float]]:
    """One writer: one transaction per event; returns (events, rejected, durations)."""
    done = rejected = 0
    durations: list[float] = []
    for i in indices:
        if time.monotonic() > stop_at:
            break
        mid = f"{prefix}-{i}"
        hold_id = uuid.uuid4()
        envelope = reply_envelope(tenant, mid, hold_id)
        t = time.perf_counter()
        async with conn.transaction():
            await conn.fetchval(RAW_INBOX, HOLDS_GROUP, str(uuid.uuid4()), REQUEST_TYPE)
            if await conn.fetchval(RAW_RESERVE, account_id, PRICE) is None:
                rejected += 1
            else:
                await conn.execute(RAW_HOLD, hold_id, account_id, f"sms:{mid}", mid, PRICE)
            await conn.execute(RAW_OUTBOX, str(uuid.uuid4()), RESERVED, REPLY_TOPIC, mid, envelope)
        durations.append(time.perf_counter() - t)
        done += 1
    return done, rejected, durations


async def run_raw(tag: str, events: int, deadline: Deadline) -> dict[str, Any]:
    """One transaction per event: inbox claim, held_minor update (conditional, like reserve),
    holds row, reply outbox row. All on one account row, as the worker's holds for one tenant."""
    setup = await raw_connect()
    out: dict[str, Any] = {
        "rows_per_event": "1 inbox row (ON CONFLICT DO NOTHING RETURNING), 1 conditional "
        "UPDATE of accounts.held_minor, 1 holds row, 1 outbox row (jsonb, NOTIFY trigger)",
        "tables": f"{SCHEMA}.billing_inbox, billing_accounts, billing_holds, billing_outbox",
        "transport": "asyncpg over TCP 127.0.0.1, like the worker",
    }
    try:
        for statement in RAW_DDL:
            await setup.execute(statement)
        await setup.execute(
            f"TRUNCATE {SCHEMA}.billing_holds, {SCHEMA}.billing_inbox, {SCHEMA}.billing_outbox, "
            f"{SCHEMA}.billing_accounts RESTART IDENTITY"
        )
        tenant = f"{tag}-raw"
        account_id = uuid.uuid4()
        await setup.execute(
            f"INSERT INTO {SCHEMA}.billing_accounts (id, tenant_id, currency, balance_minor) "
            "VALUES ($1, $2, 'USD', $3)",
            account_id,
            tenant,
            4 * events * PRICE,
        )
        total = 0
        for name, writers in (("sequential", 1), ("concurrent", RAW_WRITERS)):
            if deadline.remaining() < 3:
                out[name] = {"skipped": "time budget exhausted"}
                continue
            conns = [await raw_connect() for _ in range(writers)]
            stop_at = time.monotonic() + deadline.cap(RAW_SECONDS_CAP)
            cpu = CpuMeter({"bench_process": os.getpid()}, pg_roles=(SCHEMA, "billing"))
            t0 = time.perf_counter()
            try:
                results = await asyncio.gather(
                    *(
                        raw_writer(c, range(k, events, writers), f"{tag}-{name}", tenant, account_id, stop_at)
                        for k, c in enumerate(conns)
                    )
                )
                elapsed = time.perf_counter() - t0
                cpu_busy = cpu.result()  # before the backends exit
            finally:
                for c in conns:
                    await c.close()
            durations = [d for r in results for d in r[2]]
            rejected = sum(r[1] for r in results)
            done = sum(r[0] for r in results)
            total += done
            out[name] = {
                "writers": writers,
                "events": done,
                "complete": done == events,
                "rejected": rejected,
                "seconds": round(elapsed, 3),
                "events_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
                "transaction_latency": percentiles(durations),
                "python_cpu_ms_per_event": round(cpu_busy.get("bench_process", 0) * elapsed / done * 1000, 3)
                if done and cpu_busy
                else None,
                "cpu_cores_busy": cpu_busy,
            }
        holds, held = await setup.fetchrow(
            f"SELECT (SELECT count(*) FROM {SCHEMA}.billing_holds), "
            f"(SELECT held_minor FROM {SCHEMA}.billing_accounts WHERE id = $1)",
            account_id,
        )
        out["check"] = {
            "holds": holds,
            "held_minor": held,
            "ok": holds == total and held == total * PRICE,
        }
        return out
    finally:
        await setup.close()


# -- the backbone through the real worker -----------------------------------------------------


class Run:
    def __init__(self, cfg: argparse.Namespace, deadline: Deadline) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.tag = cfg.run_tag
        self.route = f"bench-{self.tag}"[:40]
        self.settings = billing_settings()
        self.engine = create_engine(self.settings)
        self.sessions = create_session_factory(self.engine, self.settings)
        self.producer = make_producer(kafka_settings())
        self.tap = ReplyTap(f"{self.tag}-billing-tap", self.tag)
        self.worker_pid = service_pid(WORKER)
        self.kafka_pid: int | None = None
        self.tenants: list[str] = []
        self.event_ids = 0
        self.started = datetime.now(UTC)

    def pids(self) -> dict[str, int | None]:
        return {
            "bench_process": os.getpid(),
            "billing_worker": self.worker_pid,
            "kafka": self.kafka_pid,
        }

    async def send(self, tenant: str, mid: str, sent: dict[str, float], ids: list[str]) -> asyncio.Future:
        event_id = str(uuid.uuid4())
        t = time.time()
        fut = await self.producer.send(
            REQUEST_TOPIC,
            request_record(tenant, mid, self.route, event_id, t),
            key=mid.encode(),
            headers=HEADERS,
        )
        sent[mid] = t
        ids.append(event_id)
        return fut

    async def phase(self, name: str, n: int, *, rate: float | None = None) -> dict[str, Any]:
        """Publish n requests for a fresh tenant (as fast as possible, or paced at `rate`), wait
        for the n replies (bounded), then check the database."""
        cfg, deadline = self.cfg, self.deadline
        tenant = f"{self.tag}-{name}"
        self.tenants.append(tenant)
        await fund(self.sessions, self.settings, tenant, n * PRICE)
        self.tap.watch(tenant, n)
        sent: dict[str, float] = {}
        ids: list[str] = []
        futures: list[asyncio.Future] = []
        worker_cpu0 = cpu_seconds(self.worker_pid)
        cpu = CpuMeter(self.pids(), pg_roles=("billing", SCHEMA))
        pg0 = _pg_cpu("billing")
        t0 = time.time()
        pacing = None
        if rate is None:
            for i in range(n):
                if i % 500 == 0 and deadline.expired():
                    break
                futures.append(await self.send(tenant, f"{tenant}-{i}", sent, ids))
        else:

            async def send_batch(first: int, count: int) -> None:
                for i in range(first, first + count):
                    futures.append(await self.send(tenant, f"{tenant}-{i}", sent, ids))

            pacing = await paced(rate, n / rate, send_batch, 50, deadline)
            self.tap.expect(tenant, len(sent))
        t_sent = time.time()
        await asyncio.wait_for(asyncio.gather(*futures), deadline.cap(60) or 1)
        t_acked = time.time()
        self.event_ids += len(ids)
        complete = await self.tap.wait(tenant, deadline.cap(cfg.phase_timeout))
        cpu_busy = cpu.result()
        worker_cpu = (cpu_seconds(self.worker_pid) or 0.0) - (worker_cpu0 or 0.0)
        pg_cpu = sum(c - pg0.get(pid, 0.0) for pid, c in _pg_cpu("billing").items())
        replies = dict(self.tap.replies[tenant])  # what arrived within the limit
        drained = complete
        if not complete:
            drained = await self.tap.wait(tenant, deadline.cap(cfg.drain_timeout))
        arrivals = [at for at, _, _ in replies.values()]
        span = (max(arrivals) - t0) if arrivals else 0.0
        got = len(replies)
        latencies = [replies[m][0] - sent[m] for m in replies if m in sent]
        out: dict[str, Any] = {
            "tenant": tenant,
            "requests_sent": len(sent),
            "replies": got,
            "complete": complete and len(sent) == n,
            "drained_after_limit": drained and not complete,
            "replies_after_drain": len(self.tap.replies[tenant]),
            "reply_types": dict(Counter(t for _, t, _ in self.tap.replies[tenant].values())),
            "duplicate_replies": self.tap.duplicates[tenant],
            "seconds": round(span, 3),
            "holds_per_s": round(got / span, 1) if span > 0 else None,
            "publish_seconds": round(t_sent - t0, 3),
            "publish_acked_per_s": round(len(sent) / (t_acked - t0), 1) if t_acked > t0 else None,
            "latency": percentiles(latencies),
        }
        if pacing is not None:
            out["pacing"] = pacing
            out["latency_by_second"] = latency_by_second(
                ((sent[m], arrival) for m, (arrival, _, _) in replies.items() if m in sent), t0
            )
        if got:
            out["billing_worker_cpu_ms_per_hold"] = round(worker_cpu / got * 1000, 3)
            out["billing_postgres_cpu_ms_per_hold"] = round(pg_cpu / got * 1000, 3)
        out["cpu_cores_busy"] = cpu_busy
        out["stages"] = await self.stages(tenant, sent, replies)
        out["check"] = await self.verify(tenant, n, ids, list(sent))
        return out

    async def stages(
        self, tenant: str, sent: dict[str, float], replies: dict[str, tuple[float, str, float]]
    ) -> dict[str, Any]:
        """Per event, from the rows' own timestamps (holds.created_at is the now() of the
        consumer's batch transaction; outbox.published_at the now() of the relay's claim) and
        the reply's Kafka timestamp (the relay's send)."""
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT h.reference, extract(epoch FROM h.created_at)::float8, "
                        "extract(epoch FROM o.published_at)::float8 "
                        "FROM holds h JOIN accounts a ON a.id = h.account_id "
                        "LEFT JOIN outbox o ON o.key = h.reference AND o.event_type = :t "
                        "AND o.created_at >= :since WHERE a.tenant_id = :tenant"
                    ),
                    {"t": RESERVED, "since": self.started, "tenant": tenant},
                )
            ).all()
        to_tx, tx_to_claim, claim_to_send, send_to_arrival = [], [], [], []
        tx_starts: Counter[float] = Counter()
        claims: set[float] = set()
        for ref, tx_start, claimed in rows:
            tx_starts[tx_start] += 1
            if ref not in sent:
                continue
            to_tx.append(tx_start - sent[ref])
            if claimed is None:
                continue
            claims.add(claimed)
            tx_to_claim.append(claimed - tx_start)
            if ref in replies:
                arrival, _, produced = replies[ref]
                claim_to_send.append(produced - claimed)
                send_to_arrival.append(arrival - produced)
        sizes = list(tx_starts.values())
        return {
            "send_to_consumer_tx_start": percentiles(to_tx),
            "consumer_tx_start_to_relay_claim": percentiles(tx_to_claim),
            "relay_claim_to_reply_kafka_send": percentiles(claim_to_send),
            "reply_kafka_send_to_arrival": percentiles(send_to_arrival),
            "consumer_transactions": len(sizes),
            "holds_per_consumer_transaction": {
                "mean": round(sum(sizes) / len(sizes), 1) if sizes else None,
                "max": max(sizes, default=None),
            },
            "relay_claims_with_replies": len(claims),
            "note": "tx start = now() of the consumer's partition-batch transaction (holds."
            "created_at); its handlers, commit and the relay's wake-up are in tx_start_to_claim; "
            "Kafka timestamps have 1 ms resolution",
        }

    async def verify(
        self, tenant: str, funded: int, event_ids: list[str], message_ids: list[str]
    ) -> dict[str, Any]:
        """The tenant was funded for `funded` holds; each of `message_ids` (the requests sent,
        fewer than `funded` when the phase ran out of time) must hold exactly once."""
        n = len(message_ids)
        async with self.sessions() as s:
            repo = LedgerRepository(s)
            account = await repo.customer(tenant)
            if account is None:
                return {"ok": False, "error": "no account"}
            holds = {
                status: (int(count), int(amount))
                for status, count, amount in (
                    await s.execute(
                        text(
                            "SELECT status, count(*), coalesce(sum(amount_minor), 0) FROM holds "
                            "WHERE account_id = :a GROUP BY status"
                        ),
                        {"a": account.id},
                    )
                ).all()
            }
            entries = await s.scalar(
                text("SELECT coalesce(sum(amount_minor), 0) FROM ledger_entries WHERE account_id = :a"),
                {"a": account.id},
            )
            inbox = await s.scalar(
                text(
                    "SELECT count(*) FROM inbox WHERE consumer_group = :g "
                    "AND event_id = ANY(CAST(:ids AS text[]))"
                ),
                {"g": HOLDS_GROUP, "ids": event_ids},
            )
            outbox = dict(
                (
                    await s.execute(
                        text(
                            "SELECT event_type, count(*) FROM outbox WHERE created_at >= :since "
                            "AND (key = ANY(CAST(:ids AS text[])) OR key = :tenant) GROUP BY 1"
                        ),
                        {"since": self.started, "ids": message_ids, "tenant": tenant},
                    )
                ).all()
            )
            t = time.perf_counter()
            invariants = {k: int(v) for k, v in (await repo.invariants()).items()}
            invariants_ms = round((time.perf_counter() - t) * 1000, 1)
        held_count, held_sum = holds.get("held", (0, 0))
        replies = self.tap.replies[tenant]
        types = Counter(t for _, t, _ in replies.values())
        out = {
            "holds": {k: v[0] for k, v in holds.items()},
            "held_sum_minor": held_sum,
            "account_balance_minor": account.balance_minor,
            "expected_balance_minor": funded * PRICE,
            "account_held_minor": account.held_minor,
            "expected_held_minor": n * PRICE,
            "entries_sum_minor": int(entries),
            "inbox_rows": inbox,
            "outbox_rows_by_type": outbox,
            "replies_reserved": types.get(RESERVED, 0),
            "replies_rejected": types.get(REJECTED, 0),
            "duplicate_replies": self.tap.duplicates[tenant],
            "invariants": invariants,
            "invariants_query_ms": invariants_ms,
        }
        out["tenant_ok"] = (
            held_count == n
            and sum(v[0] for v in holds.values()) == n
            and held_sum == n * PRICE
            and account.held_minor == n * PRICE
            and account.balance_minor == funded * PRICE
            and entries == account.balance_minor
            and inbox == n
            and outbox.get(RESERVED, 0) == n
            and types.get(RESERVED, 0) == n
            and not types.get(REJECTED)
            and self.tap.duplicates[tenant] == 0
        )
        out["invariants_ok"] = all(v == 0 for v in invariants.values())
        out["ok"] = out["tenant_ok"] and out["invariants_ok"]
        return out

    async def handler_alone(self, k: int) -> dict[str, Any]:
        """The hold handler alone, in this process, on the billing schema, inside one transaction
        that is rolled back: funding, k holds, their outbox rows, nothing is kept."""
        model = EventEnvelope[SmsRequestedV1]
        tenant = f"{self.tag}-alone"
        envelopes = [
            model(
                source="/switchboard/messaging",
                type=REQUEST_TYPE,
                subject=f"{tenant}-{i}",
                tenantid=tenant,
                data=SmsRequestedV1(
                    message_id=f"{tenant}-{i}",
                    tenant_id=tenant,
                    to=PHONE,
                    country=COUNTRY,
                    segments=1,
                    route=self.route,
                ),
            )
            for i in range(k)
        ]
        raw = [e.model_dump_json(by_alias=True) for e in envelopes]
        t = time.process_time()
        for r in raw:
            model.model_validate(json.loads(r))
        decode_cpu = time.process_time() - t
        statements = 0

        def count(*_args: Any) -> None:
            nonlocal statements
            statements += 1

        steps = StepTimer()
        sa_event.listen(self.engine.sync_engine, "before_cursor_execute", count)
        try:
            async with self.sessions() as s:
                tx = await s.begin()
                try:
                    account = await ledger.account_for(s, tenant, self.settings.default_currency, create=True)
                    assert account is not None
                    await ledger.credit(
                        s, account, k * PRICE, business_key=f"fund:{tenant}", kind="adjustment",
                        counter_account="adjustments", description="bench (rolled back)",
                    )
                    statements = 0
                    with steps:
                        t_wall, t_cpu = time.perf_counter(), time.process_time()
                        # As the consumer calls it: one call per partition batch (up to 500).
                        for i in range(0, k, 500):
                            await on_sms_requested(s, self.settings, envelopes[i : i + 500])
                        wall = time.perf_counter() - t_wall
                        cpu = time.process_time() - t_cpu
                    held = (await LedgerRepository(s).refreshed(account.id)).held_minor
                finally:
                    await tx.rollback()
        finally:
            sa_event.remove(self.engine.sync_engine, "before_cursor_execute", count)
        return {
            "events": k,
            "rolled_back": True,
            "ok": held == k * PRICE,
            "holds_per_s": round(k / wall, 1) if wall > 0 else None,
            "wall_ms_per_hold": round(wall / k * 1000, 3),
            "python_cpu_ms_per_hold": round(cpu / k * 1000, 3),
            "statements_per_hold": round(statements / k, 2),
            "envelope_decode_cpu_ms_per_event": round(decode_cpu / k * 1000, 3),
            "steps_per_hold": steps.per_event(k, cpu, wall),
            "note": "one transaction, no Kafka, no inbox, no consumer loop, no log lines; the "
            "database round trips are sequential (one connection)",
        }

    async def close(self) -> None:
        await self.tap.close()
        try:
            await asyncio.wait_for(self.producer.stop(), 10)
        finally:
            await self.engine.dispose()


class StepTimer:
    """While active, wraps the hold path's steps (the service's own functions, in this process
    only) and adds up the CPU and wall time spent in each. Restored on exit."""

    def __init__(self) -> None:
        import billing.holds.handlers as handlers_module
        import billing.ledger.service as service_module

        self.targets = [
            ("pricing_lookup", handlers_module, "sms_segment_price"),
            ("account_lookup", service_module, "account_for"),
            ("balance_changed_refresh_and_event", service_module, "balance_changed"),
            ("place_holds_total", service_module, "place_holds"),
            ("reply_events", handlers_module, "emit_many"),
        ]
        self.cpu: Counter[str] = Counter()
        self.wall: Counter[str] = Counter()
        self.saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, name: str, fn: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            c, w = time.process_time(), time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.cpu[name] += time.process_time() - c
                self.wall[name] += time.perf_counter() - w

        return timed

    def __enter__(self) -> StepTimer:
        for name, owner, attr in self.targets:
            fn = getattr(owner, attr)
            self.saved.append((owner, attr, fn))
            setattr(owner, attr, self._wrap(name, fn))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, fn in reversed(self.saved):
            setattr(owner, attr, fn)
        self.saved.clear()

    def per_event(self, k: int, cpu: float, wall: float) -> dict[str, Any]:
        out = {
            name: {
                "cpu_ms": round(self.cpu[name] / k * 1000, 3),
                "wall_ms": round(self.wall[name] / k * 1000, 3),
            }
            for name, _, _ in self.targets
        }
        # account_lookup and balance_changed run inside place_holds: not counted twice.
        top = ("pricing_lookup", "place_holds_total", "reply_events")
        out["rest_of_handler"] = {
            "cpu_ms": round((cpu - sum(self.cpu[n] for n in top)) / k * 1000, 3),
            "wall_ms": round((wall - sum(self.wall[n] for n in top)) / k * 1000, 3),
        }
        return out


def _pg_cpu(role: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend of `role`, by pid."""
    return {
        pid: cpu_seconds(pid) or 0.0
        for pid, kind in _postgres_pids((role,)).items()
        if kind == f"postgres_{role}"
    }


async def run_billing(cfg: argparse.Namespace, deadline: Deadline, kafka_pid: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"goal_ratio": GOAL_RATIO, "price_minor": PRICE}
    watch = WorkerWatch()
    if watch.pid is None:
        raise BenchError(f"{WORKER} is not running (scripts/devstack.py status)")
    run = Run(cfg, deadline)
    run.kafka_pid = kafka_pid
    out["route"] = run.route
    out["worker"] = {"pid": watch.pid, "consumer_group": HOLDS_GROUP, "db_pool_size": "SB_DB_POOL_SIZE of the stack"}
    out["outbox_backlog_at_start"] = await outbox_backlog()
    rule = await add_pricing_rule(run.route)
    errors: list[str] = []
    try:
        log_step(f"raw asyncpg baseline ({cfg.billing_raw_events} events, 1 then {RAW_WRITERS} writers)")
        try:
            out["raw"] = await run_raw(run.tag, cfg.billing_raw_events, deadline)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"raw: {exc!r}")
            out["raw"] = {"error": repr(exc)}
        # the worker's own cost with nothing to do (its consumers poll, its relay waits)
        idle = CpuMeter(run.pids(), pg_roles=("billing", SCHEMA))
        await asyncio.sleep(2.0)
        out["worker_idle"] = idle.result()
        await asyncio.wait_for(run.producer.start(), deadline.cap(30))
        await run.tap.start(deadline.cap(30))
        log_step(f"warm-up ({WARMUP_EVENTS} requests)")
        out["warmup"] = await run.phase("warm", WARMUP_EVENTS)
        if not out["warmup"]["complete"]:
            raise BenchError(f"the billing worker did not answer the warm-up: {out['warmup']['replies']}/{WARMUP_EVENTS}")
        log_step(f"throughput ({cfg.billing_events} requests as fast as the producer takes them)")
        out["throughput"] = await run.phase("tp", cfg.billing_events)
        out["paced"] = []
        for rate in cfg.billing_rates:
            if deadline.remaining() < cfg.billing_paced_seconds + 8:
                out["paced"].append({"rate": rate, "skipped": "time budget exhausted"})
                continue
            log_step(f"paced ({rate:g}/s for {cfg.billing_paced_seconds:g} s)")
            n_paced = max(1, int(rate * cfg.billing_paced_seconds))
            out["paced"].append(
                {"rate": rate, **await run.phase(f"paced{rate:g}", n_paced, rate=rate)}
            )
        if cfg.billing_handler_events and deadline.remaining() > 5:
            log_step(f"hold handler alone ({cfg.billing_handler_events} holds, rolled back)")
            try:
                out["handler_alone"] = await run.handler_alone(cfg.billing_handler_events)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"handler_alone: {exc!r}")
                out["handler_alone"] = {"error": repr(exc)}
        elif cfg.billing_handler_events:
            out["handler_alone"] = {"skipped": "time budget exhausted"}
        out["foreign_load"] = await foreign_load(run.started, run.tenants, run.event_ids)
    finally:
        out["reply_records_read"] = run.tap.records_read
        await run.close()
        backlog = any(
            ph.get("replies_after_drain", 0) < ph.get("requests_sent", 0) for ph in phases(out)
        )
        if not backlog:
            await remove_pricing_rule(rule)
        out["pricing_rule_removed"] = not backlog
    out["errors"] = errors
    out["worker_watch"] = watch.verdict()
    out["goals"] = goals(out)
    return out


def phases(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured phases that ran (warm-up, throughput, each paced run)."""
    found = [out.get("warmup"), out.get("throughput"), *(out.get("paced") or [])]
    return [ph for ph in found if isinstance(ph, dict) and "check" in ph]


def goals(out: dict[str, Any]) -> dict[str, Any]:
    raw = out.get("raw") or {}
    tp = out.get("throughput") or {}
    raw_conc = (raw.get("concurrent") or {}).get("events_per_s")
    raw_seq = (raw.get("sequential") or {}).get("events_per_s")
    holds = tp.get("holds_per_s")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    r = ratio(holds, raw_conc)
    checks_ok = (
        bool(phases(out))
        and all(ph["check"].get("ok") for ph in phases(out))
        and "check" in tp
        and bool((raw.get("check") or {}).get("ok"))
    )
    return {
        "holds_per_s": holds,
        "raw_events_per_s": raw_conc,
        "raw_sequential_events_per_s": raw_seq,
        "ratio": r,
        "ratio_definition": f"backbone holds/s (throughput) / raw events/s ({RAW_WRITERS} writers, "
        "the consumer's concurrency)",
        "ratio_vs_sequential_raw": ratio(holds, raw_seq),
        "ratio_goal": GOAL_RATIO,
        "throughput_p99_ms": (tp.get("latency") or {}).get("p99_ms"),
        "paced_p99_ms": {
            f"{pc['rate']:g}/s": (pc.get("latency") or {}).get("p99_ms")
            for pc in out.get("paced") or []
            if not pc.get("skipped")
        },
        "invariants_ok": checks_ok,
        "goal_met": r is not None and r >= GOAL_RATIO and bool(tp.get("complete")) and checks_ok,
    }


def summarize_billing(bl: dict[str, Any]) -> list[str]:
    if not bl or "goals" not in bl:
        return [f"  billing: not completed ({(bl or {}).get('error', 'not run')})"]
    g = bl["goals"]
    lines = ["  billing holds (the real billing-worker, group billing-holds; this process plays messaging)"]
    raw = bl.get("raw") or {}
    for name in ("sequential", "concurrent"):
        r = raw.get(name) or {}
        if r.get("events_per_s"):
            lat = r.get("transaction_latency") or {}
            lines.append(
                f"    raw asyncpg, {r['writers']} writer(s)   {r['events_per_s']} ev/s "
                f"({r['events']} events, tx p50 {lat.get('p50_ms')} / p99 {lat.get('p99_ms')} ms)"
            )
    runs = [("throughput", bl.get("throughput") or {})]
    runs += [("paced", pc) for pc in bl.get("paced") or []]
    for label, p in runs:
        if p.get("skipped") or not p:
            lines.append(f"    {label}: {p.get('skipped', 'not run')}")
            continue
        lat = p.get("latency") or {}
        rate = f" at {p['pacing']['achieved_rate']}/s" if p.get("pacing") else ""
        c = p.get("check") or {}
        lines.append(
            f"    {label}{rate}: {p.get('holds_per_s')} holds/s, {p.get('replies')}/{p.get('requests_sent')} "
            f"replies in {p.get('seconds')} s; p50 {lat.get('p50_ms')}  p95 {lat.get('p95_ms')}  "
            f"p99 {lat.get('p99_ms')}  max {lat.get('max_ms')} ms"
        )
        lines.append(
            f"      check: holds {c.get('holds')}, held {c.get('account_held_minor')}/"
            f"{c.get('expected_held_minor')}, inbox {c.get('inbox_rows')}, replies reserved "
            f"{c.get('replies_reserved')} rejected {c.get('replies_rejected')} dup "
            f"{c.get('duplicate_replies')}; invariants {c.get('invariants')} -> "
            f"{'OK' if c.get('ok') else 'FAILED'}"
        )
        st = p.get("stages") or {}
        if st:

            def pp(x: dict[str, Any]) -> str:
                return f"{x.get('p50_ms')}/{x.get('p99_ms')}"

            lines.append(
                f"      stages p50/p99 ms: send->consumer tx {pp(st['send_to_consumer_tx_start'])}, "
                f"tx->relay claim {pp(st['consumer_tx_start_to_relay_claim'])}, claim->reply send "
                f"{pp(st['relay_claim_to_reply_kafka_send'])}, reply send->arrival "
                f"{pp(st['reply_kafka_send_to_arrival'])}; {st['consumer_transactions']} consumer tx "
                f"({st['holds_per_consumer_transaction']['mean']} holds each)"
            )
        cpu = p.get("cpu_cores_busy") or {}
        if cpu:
            lines.append(
                f"      CPU: worker {p.get('billing_worker_cpu_ms_per_hold')} ms/hold "
                f"({cpu.get('billing_worker')} cores), billing PG backends "
                f"{p.get('billing_postgres_cpu_ms_per_hold')} ms/hold ({cpu.get('postgres_billing')} cores), "
                f"kafka {cpu.get('kafka')}, this process {cpu.get('bench_process')}, PG server "
                f"{cpu.get('postgres_server')}, outside {cpu.get('outside_benchmark')} (of {cpu.get('cpus')})"
            )
    ha = bl.get("handler_alone") or {}
    if ha.get("holds_per_s"):
        lines.append(
            f"    hold handler alone (in-process, rolled back): {ha['holds_per_s']} holds/s, "
            f"{ha['python_cpu_ms_per_hold']} ms CPU + {round(ha['wall_ms_per_hold'] - ha['python_cpu_ms_per_hold'], 3)} "
            f"ms waiting per hold, {ha['statements_per_hold']} statements/hold; envelope decode "
            f"{ha['envelope_decode_cpu_ms_per_event']} ms"
        )
        steps = ha.get("steps_per_hold") or {}
        if steps:
            lines.append(
                "      handler CPU ms/hold by step: "
                + ", ".join(f"{k} {v['cpu_ms']}" for k, v in steps.items())
            )
    lines.append(
        f"    goal holds/s >= {GOAL_RATIO:.0%} of raw ({RAW_WRITERS} writers): ratio {g['ratio']} "
        f"(vs 1 writer {g['ratio_vs_sequential_raw']}) "
        f"{'MET' if g['goal_met'] else 'NOT MET'}; p99 {g['throughput_p99_ms']} ms (throughput), "
        f"paced {g['paced_p99_ms']} ms; invariants "
        f"{'intact' if g['invariants_ok'] else 'NOT intact'}"
    )
    idle = bl.get("worker_idle") or {}
    if idle:
        lines.append(
            f"    billing worker idle: {idle.get('billing_worker')} cores (billing PG backends "
            f"{idle.get('postgres_billing')}); outbox backlog at start "
            f"{(bl.get('outbox_backlog_at_start') or {}).get('unpublished')}"
        )
    fl = bl.get("foreign_load") or {}
    if fl.get("foreign_events_handled"):
        lines.append(
            f"    note: the worker also handled {fl['foreign_events_handled']} events for others "
            f"meanwhile ({fl.get('foreign_holds_placed')} holds)"
        )
    dist = bl.get("disturbance") or {}
    if dist.get("disturbed"):
        ww = bl.get("worker_watch") or {}
        lines.append(
            f"    WARNING: disturbed (restarted: {dist.get('restarted')}, worker restarted: "
            f"{ww.get('worker_restarted')}, worker log: {ww.get('worker_log_counts')}, client "
            f"warnings: {dist.get('client_log_counts')})"
        )
    if dist.get("noisy"):
        lines.append(
            f"    WARNING: noisy: outside the benchmark up to {dist.get('max_cores_used_outside_benchmark')} "
            f"cores, foreign worker events {fl.get('foreign_events_handled')}"
        )
    return lines
