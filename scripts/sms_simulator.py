"""A local SMS provider for `make dev` and the tests (dev/test tool, 127.0.0.1 only).

It speaks the HTTP SMS gateway wire format of `messaging.providers.http_gateway` (so the service
talks to it with the same adapter, under the provider name "simulator"), "delivers" messages into
an in-memory inbox per phone number, and calls the webhook URL with signed delivery reports like a
real provider: `sent`, then `delivered` (or `failed`).

    python scripts/sms_simulator.py --port 8430 --api-key sim_local_key \\
        --webhook-url http://127.0.0.1:8080/api/v1/webhooks/sms/simulator --webhook-secret S

(or SMS_SIM_API_KEY, SMS_SIM_WEBHOOK_URL, SMS_SIM_WEBHOOK_SECRET in the environment).

Provider API:
    POST /v1/messages   X-API-Key; {"to", "text", "sender", "clientRef"} -> 202 {"id", "status"}
                        (the same clientRef again answers the first message: idempotent)
    POST /v1/messages/batch  X-API-Key; {"messages": [{"to", "text", "sender", "clientRef"}, ...]}
                        (1 to 500) -> 200 {"results": [...]}, one per message in order:
                        {"clientRef", "id", "status"} (accepted, or "duplicate": true) or
                        {"clientRef", "error", "message"} (refused for good: INVALID_NUMBER, ...)
                        or {"clientRef", "error": "UNAVAILABLE" | "THROTTLED", "message",
                        "retryable": true, "retryAfter"?} (this message not now). The whole
                        request answers 401 (key), 400 (not a list of 1 to 500 objects), or 503
                        during a global outage (POST /_sim/outage).
    GET  /v1/messages/{id}

Behaviour by destination number (the longest matching suffix wins; in a batch, for that item):
    ...0001  reject: 400 INVALID_NUMBER (permanent)
    ...0002  outage: 503 (retryable; in a batch the item's error UNAVAILABLE, retryable)
    ...0003  delay: accepted, delivered (and reported) after 5 s
    ...0004  undeliverable: accepted, then a `failed` report
    ...0005  throttle: 429 with Retry-After (in a batch: THROTTLED, retryable, retryAfter 1)
    anything else: delivered after --report-delay

A message's lifecycle (sent, then delivered or failed) runs on loop timers (`call_later`), not
a task per message, so a batch of 500 costs one request's parsing and 500 timer entries.

Inspection and control (what a person running `make dev`, or a test, uses):
    GET  /_sim/inbox/{phone}         delivered messages: [{id, text, from, at, clientRef}]
    GET  /_sim/messages?since=N      every message with its status and webhook calls; "next"
    GET  /_sim/rules                 POST /_sim/rules {"suffix", "action", "delaySeconds"?}
    DELETE /_sim/rules/{suffix}      POST /_sim/outage {"on": true|false}
    GET  /_sim/stats                 POST /_sim/reset (messages, rules, outage back to start)

    curl -s http://127.0.0.1:8430/_sim/inbox/+14155550123

A handset replying (what a person running `make dev` uses to "text one of our numbers"):
    POST /_sim/inbound {"from", "to", "text", "id"?}  -> 202 {"id"}: the simulator posts a signed
                                     inbound webhook item for it, like a real provider would
                                     (the same "id" again replays a provider's redelivery)
    GET  /_sim/inbound               the inbound messages posted, with their webhook attempts

    curl -s localhost:8430/_sim/inbound -d '{"from":"+14155550123","to":"+18005550100","text":"STOP"}'

Webhooks: POST <webhook url>, header X-Signature = hex HMAC-SHA256(secret, url + body). Items:
delivery reports {"id", "clientRef", "status", "error"?} and inbound messages {"type": "inbound",
"id", "from", "to", "text", "receivedAt"}. Items that fall due within --report-batch-ms (50 ms;
SMS_SIM_REPORT_BATCH_MS) go out together as one JSON list, up to 500 per request, at most 4
requests in flight; a message's later report never goes out before its earlier one was taken
(or given up on), so `sent` always precedes `delivered`. With --report-batch-ms 0 every item is
posted alone as a JSON object. A call that fails (the endpoint answering 404 while it does not
exist yet, say) is retried 5 times with backoff (0.5, 1, 2, 4 s), then dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("sms_simulator")

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ACTIONS = ("deliver", "reject", "outage", "throttle", "delay", "undeliverable")
DEFAULT_RULES = {
    "0001": {"action": "reject"},
    "0002": {"action": "outage"},
    "0003": {"action": "delay", "delaySeconds": 5.0},
    "0004": {"action": "undeliverable"},
    "0005": {"action": "throttle"},
}
MAX_MESSAGES = 10_000  # kept in memory, oldest dropped first
MAX_INBOX = 200  # per phone
REPORT_ATTEMPTS = 5
MAX_BATCH = 500  # webhook items per request when batching
MAX_SEND_BATCH = 500  # messages per POST /v1/messages/batch
MAX_IN_FLIGHT = 4  # webhook requests at once
MAX_INBOUND_TEXT = 10_000  # the wire format's limit (the service keeps 1,600 characters)


@dataclass
class Message:
    seq: int
    id: str
    to: str
    text: str
    sender: str | None
    client_ref: str | None
    created_at: str
    status: str = "accepted"
    delivered_at: str | None = None
    error: str | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "to": self.to,
            "text": self.text,
            "from": self.sender,
            "clientRef": self.client_ref,
            "status": self.status,
            "createdAt": self.created_at,
            "deliveredAt": self.delivered_at,
            "error": self.error,
            "reports": self.reports,
        }


@dataclass
class Outgoing:
    """One webhook item waiting to be posted."""

    payload: dict[str, Any]
    record: dict[str, Any]  # what /_sim/messages and /_sim/inbound show about its delivery
    queued_at: float
    done: asyncio.Future[bool]  # resolved once it was taken, or given up on
    after: asyncio.Future[bool] | None = None  # the same message's previous item


class Simulator:
    def __init__(
        self,
        *,
        api_key: str,
        webhook_url: str,
        webhook_secret: str,
        report_delay_s: float,
        report_batch_s: float = 0.05,
    ) -> None:
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.report_delay_s = report_delay_s
        self.report_batch_s = max(0.0, report_batch_s)
        self.max_batch = MAX_BATCH if self.report_batch_s > 0 else 1
        self.tasks: set[asyncio.Task[None]] = set()
        self.generation = 0  # bumped by reset: lifecycle timers of an older generation do nothing
        self.lifecycles = 0  # messages whose lifecycle is still running
        self.seq = itertools.count(1)  # never reset: a `since` cursor stays valid across resets
        self.outgoing: list[Outgoing] = []
        self.wake = asyncio.Event()
        self.idle = True  # the poster waits for a first item (or for a batch to finish)
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.client: httpx.AsyncClient | None = None
        self.flusher: asyncio.Task[None] | None = None
        self.reset()

    def start(self, client: httpx.AsyncClient) -> None:
        """Start posting webhooks (needs the running loop)."""
        self.client = client
        self.flusher = asyncio.create_task(self.flush_forever())

    def reset(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks = set()
        self.generation += 1
        self.lifecycles = 0
        for item in self.outgoing:
            if not item.done.done():
                item.done.set_result(False)
        self.outgoing = []
        self.last_item: dict[str, asyncio.Future[bool]] = {}  # message id -> its latest item
        self.inbound: deque[dict[str, Any]] = deque(maxlen=1000)
        self.rules: dict[str, dict[str, Any]] = {k: dict(v) for k, v in DEFAULT_RULES.items()}
        self.outage = False
        self.messages: deque[Message] = deque(maxlen=MAX_MESSAGES)
        self.by_id: dict[str, Message] = {}
        self.by_client_ref: dict[str, Message] = {}
        self.inboxes: dict[str, deque[dict[str, Any]]] = {}
        self.stats = {
            "requests": 0, "batchRequests": 0, "batchItems": 0, "accepted": 0, "duplicates": 0,
            "rejected": 0, "unavailable": 0, "inbound": 0, "webhookRequests": 0, "webhookItems": 0,
            "webhookFailures": 0,
        }

    def rule_for(self, phone: str) -> dict[str, Any]:
        matches = [s for s in self.rules if phone.endswith(s)]
        return self.rules[max(matches, key=len)] if matches else {"action": "deliver"}

    def store(self, message: Message) -> None:
        if len(self.messages) == self.messages.maxlen:
            old = self.messages[0]
            self.by_id.pop(old.id, None)
            if old.client_ref:
                self.by_client_ref.pop(old.client_ref, None)
        self.messages.append(message)
        self.by_id[message.id] = message
        if message.client_ref:
            self.by_client_ref[message.client_ref] = message

    def deliver(self, message: Message) -> None:
        message.status = "delivered"
        message.delivered_at = now()
        inbox = self.inboxes.setdefault(message.to, deque(maxlen=MAX_INBOX))
        inbox.append(
            {
                "id": message.id,
                "text": message.text,
                "from": message.sender,
                "at": message.delivered_at,
                "clientRef": message.client_ref,
            }
        )

    def submit(self, item: Any) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        """One message of either send endpoint: (HTTP status, body, headers) as the single
        endpoint answers it. Accepting stores it and starts its lifecycle."""
        if not isinstance(item, dict):
            return 400, _error("INVALID_REQUEST", "The message is not an object"), None
        to, text = item.get("to"), item.get("text")
        sender, client_ref = item.get("sender"), item.get("clientRef")
        if not isinstance(to, str) or not E164.match(to):
            self.stats["rejected"] += 1
            return 400, _error("INVALID_NUMBER", "`to` must be an E.164 number"), None
        if not isinstance(text, str) or not 0 < len(text) <= 1600:
            self.stats["rejected"] += 1
            return 400, _error("INVALID_TEXT", "`text` must hold 1 to 1600 characters"), None
        if sender is not None and (not isinstance(sender, str) or len(sender) > 16):
            return 400, _error("INVALID_SENDER", "`sender` must be at most 16 characters"), None
        if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > 128):
            return 400, _error("INVALID_CLIENT_REF", "`clientRef` must be at most 128 characters"), None
        if self.outage:
            self.stats["unavailable"] += 1
            return 503, _error("OUTAGE", "Simulated outage (POST /_sim/outage)"), None
        rule = self.rule_for(to)
        action = rule["action"]
        if action == "outage":
            self.stats["unavailable"] += 1
            return 503, _error("OUTAGE", f"Simulated outage for {to}"), None
        if action == "throttle":
            self.stats["unavailable"] += 1
            return 429, _error("THROTTLED", "Simulated rate limit"), {"Retry-After": "1"}
        if action == "reject":
            self.stats["rejected"] += 1
            return 400, _error("INVALID_NUMBER", f"Simulated permanent rejection of {to}"), None
        if client_ref and client_ref in self.by_client_ref:
            self.stats["duplicates"] += 1
            earlier = self.by_client_ref[client_ref]
            return 200, {"id": earlier.id, "status": earlier.status, "duplicate": True}, None
        message = Message(
            seq=next(self.seq),
            id=f"sim_{secrets.token_hex(8)}",
            to=to,
            text=text,
            sender=sender,
            client_ref=client_ref,
            created_at=now(),
        )
        self.store(message)
        self.stats["accepted"] += 1
        self.start_lifecycle(message, rule)
        return 202, {"id": message.id, "status": "accepted"}, None

    def start_lifecycle(self, message: Message, rule: dict[str, Any]) -> None:
        """accepted -> sent -> delivered | failed, on the simulated clock (loop timers: no task
        per message). The reports are queued in order for the webhook poster, so a slow or
        absent webhook delays the reports but never the delivery into the inbox."""
        self.lifecycles += 1
        loop = asyncio.get_running_loop()
        loop.call_later(self.report_delay_s, self._sent, message, rule, self.generation)

    def _sent(self, message: Message, rule: dict[str, Any], generation: int) -> None:
        if generation != self.generation:
            return
        message.status = "sent"
        self.report(message, "sent")
        delay = float(rule.get("delaySeconds", 5.0)) if rule["action"] == "delay" else self.report_delay_s
        asyncio.get_running_loop().call_later(delay, self._final, message, rule, generation)

    def _final(self, message: Message, rule: dict[str, Any], generation: int) -> None:
        if generation != self.generation:
            return
        self.lifecycles -= 1
        if rule["action"] == "undeliverable":
            message.status, message.error = "failed", "UNDELIVERABLE"
            self.report(message, "failed", "UNDELIVERABLE")
        else:
            self.deliver(message)
            self.report(message, "delivered")

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def report(self, message: Message, status: str, error: str | None = None) -> None:
        payload: dict[str, Any] = {"id": message.id, "clientRef": message.client_ref, "status": status}
        if error:
            payload["error"] = error
        record: dict[str, Any] = {"status": status, "attempts": 0, "httpStatus": None, "ok": False}
        message.reports.append(record)
        self.enqueue(payload, record, key=message.id)

    def enqueue(self, payload: dict[str, Any], record: dict[str, Any], key: str | None = None) -> None:
        """Queue one webhook item; items of one `key` (a message) go out in the order queued."""
        loop = asyncio.get_running_loop()
        item = Outgoing(payload, record, loop.time(), loop.create_future())
        if not self.webhook_url:
            item.done.set_result(False)
            return
        if key is not None:
            previous = self.last_item.get(key)
            if previous is not None and not previous.done():
                item.after = previous
            self.last_item[key] = item.done
            item.done.add_done_callback(lambda _, k=key, f=item.done: self._forget(k, f))
        self.outgoing.append(item)
        # Wake the poster when it has nothing to do and for every full batch, not for each item.
        if self.idle or len(self.outgoing) % self.max_batch == 0:
            self.wake.set()

    def _forget(self, key: str, done: asyncio.Future[bool]) -> None:
        if self.last_item.get(key) is done:
            del self.last_item[key]

    def _ready(self) -> list[Outgoing]:
        ready: list[Outgoing] = []
        for item in self.outgoing:
            if item.after is None or item.after.done():
                ready.append(item)
                if len(ready) == self.max_batch:
                    break
        return ready

    async def flush_forever(self) -> None:
        """Post due items: a batch when it is full or its oldest item waited --report-batch-ms."""
        loop = asyncio.get_running_loop()
        while True:
            ready = self._ready()
            wait = None
            if not ready:
                wait = 1.0  # or until something is queued or a batch finishes
            elif len(ready) < self.max_batch:
                wait = ready[0].queued_at + self.report_batch_s - loop.time()
            if wait is not None and wait > 0:
                self.wake.clear()
                self.idle = not ready
                try:
                    await asyncio.wait_for(self.wake.wait(), wait)
                except TimeoutError:
                    pass
                self.idle = False
                continue
            taken = {id(item) for item in ready}
            self.outgoing = [item for item in self.outgoing if id(item) not in taken]
            await self.slots.acquire()
            self.spawn(self.post(ready))

    async def post(self, batch: list[Outgoing]) -> None:
        try:
            await self._post(batch)
        finally:
            self.slots.release()
            for item in batch:
                if not item.done.done():
                    item.done.set_result(bool(item.record["ok"]))
            self.wake.set()  # their successors may go now

    async def _post(self, batch: list[Outgoing]) -> None:
        assert self.client is not None
        payload: Any = batch[0].payload if self.max_batch == 1 else [item.payload for item in batch]
        body = json.dumps(payload, separators=(",", ":")).encode()
        signature = hmac.new(
            self.webhook_secret.encode(), self.webhook_url.encode() + body, hashlib.sha256
        ).hexdigest()
        records = [item.record for item in batch]
        what = f"{len(batch)} item(s), first {batch[0].payload.get('status') or batch[0].payload.get('type')} for {batch[0].payload['id']}"
        for attempt in range(REPORT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))  # 0.5, 1, 2, 4 s
            self.stats["webhookRequests"] += 1
            for record in records:
                record["attempts"] = attempt + 1
            try:
                response = await self.client.post(
                    self.webhook_url,
                    content=body,
                    headers={"Content-Type": "application/json", "X-Signature": signature},
                )
            except httpx.HTTPError as exc:
                for record in records:
                    record["httpStatus"], record["error"] = None, repr(exc)
                log.info("webhook %s: %r (attempt %d)", what, exc, attempt + 1)
                continue
            for record in records:
                record["httpStatus"] = response.status_code
            if response.is_success:
                for record in records:
                    record["ok"] = True
                    record.pop("error", None)
                self.stats["webhookItems"] += len(batch)
                return
            log.info("webhook %s: HTTP %d (attempt %d)", what, response.status_code, attempt + 1)
        self.stats["webhookFailures"] += 1
        log.warning(
            "webhook of %s not taken after %d attempts (last HTTP %s)",
            what, REPORT_ATTEMPTS, records[0]["httpStatus"],
        )


def _error(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def batch_item(client_ref: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None) -> dict[str, Any]:
    """A single-endpoint answer as an item of a batch answer: 429/503 become retryable errors."""
    item: dict[str, Any] = {"clientRef": client_ref if isinstance(client_ref, str) else None}
    if status < 400:
        item.update(body)
        return item
    item.update(body)
    if status == 503:
        item["error"], item["retryable"] = "UNAVAILABLE", True
    elif status == 429:
        item["retryable"] = True
        item["retryAfter"] = float((headers or {}).get("Retry-After", "1"))
    return item


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalise_phone(raw: str) -> str:
    digits = re.sub(r"[\s()-]", "", raw)
    return digits if digits.startswith("+") else f"+{digits}"


def create_app(sim: Simulator) -> FastAPI:
    client = httpx.AsyncClient(timeout=5.0)

    async def lifespan(app: FastAPI):  # noqa: ANN202
        sim.start(client)
        yield
        if sim.flusher is not None:
            sim.flusher.cancel()
        for task in list(sim.tasks):
            task.cancel()
        await client.aclose()

    app = FastAPI(title="SMS simulator", lifespan=lifespan)

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    def authorised(request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("x-api-key", "").encode(), sim.api_key.encode())

    async def authorised_json(request: Request) -> tuple[Any, JSONResponse | None]:
        """The request's JSON body, or the 401/400 answer when the key or the JSON is wrong."""
        if not authorised(request):
            return None, error(401, "UNAUTHORIZED", "Missing or wrong X-API-Key")
        try:
            return await request.json(), None
        except ValueError:
            return None, error(400, "INVALID_REQUEST", "The body is not JSON")

    @app.post("/v1/messages")
    async def send(request: Request) -> JSONResponse:
        sim.stats["requests"] += 1
        body, refused = await authorised_json(request)
        if refused is not None:
            return refused
        if not isinstance(body, dict):
            return error(400, "INVALID_REQUEST", "The body is not an object")
        status, answer, headers = sim.submit(body)
        if status == 202:
            log.info("accepted %s to %s", answer["id"], body["to"])
        return JSONResponse(answer, status_code=status, headers=headers)

    @app.post("/v1/messages/batch")
    async def send_batch(request: Request) -> JSONResponse:
        sim.stats["requests"] += 1
        sim.stats["batchRequests"] += 1
        body, refused = await authorised_json(request)
        if refused is not None:
            return refused
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 0 < len(items) <= MAX_SEND_BATCH:
            return error(400, "INVALID_REQUEST", f"`messages` must be a list of 1 to {MAX_SEND_BATCH} messages")
        if sim.outage:
            sim.stats["unavailable"] += len(items)
            return error(503, "OUTAGE", "Simulated outage (POST /_sim/outage)")
        sim.stats["batchItems"] += len(items)
        results = []
        accepted = 0
        for item in items:
            status, answer, headers = sim.submit(item)
            accepted += status == 202
            results.append(batch_item(item.get("clientRef") if isinstance(item, dict) else None,
                                      status, answer, headers))
        log.info("batch of %d: %d accepted", len(items), accepted)
        return JSONResponse({"results": results}, status_code=200)

    @app.get("/v1/messages/{message_id}")
    async def get_message(message_id: str) -> JSONResponse:
        message = sim.by_id.get(message_id)
        if message is None:
            return error(404, "NOT_FOUND", "No such message")
        return JSONResponse(message.public())

    @app.get("/_sim/inbox/{phone}")
    async def inbox(phone: str) -> list[dict[str, Any]]:
        return list(sim.inboxes.get(normalise_phone(phone), ()))

    @app.get("/_sim/messages")
    async def messages(since: int = 0, to: str | None = None) -> dict[str, Any]:
        phone = normalise_phone(to) if to else None
        found = [m.public() for m in sim.messages if m.seq > since and (phone is None or m.to == phone)]
        last = sim.messages[-1].seq if sim.messages else since
        return {"messages": found, "next": max(since, last)}

    @app.post("/_sim/inbound")
    async def inbound(request: Request) -> JSONResponse:
        """A handset texts `to` (one of the platform's numbers): post it as a provider would."""
        body = await json_object(request)
        sender, to, text, given_id = body.get("from"), body.get("to"), body.get("text"), body.get("id")
        if not isinstance(sender, str) or not E164.match(normalise_phone(sender)):
            return error(400, "INVALID_NUMBER", "`from` must be an E.164 number")
        if not isinstance(to, str) or not E164.match(normalise_phone(to)):
            return error(400, "INVALID_NUMBER", "`to` must be an E.164 number")
        if not isinstance(text, str) or len(text) > MAX_INBOUND_TEXT:
            return error(400, "INVALID_TEXT", f"`text` must be a string of at most {MAX_INBOUND_TEXT} characters")
        if given_id is not None and (not isinstance(given_id, str) or not 0 < len(given_id) <= 128):
            return error(400, "INVALID_ID", "`id` must hold 1 to 128 characters")
        payload = {
            "type": "inbound",
            "id": given_id or f"sim_in_{secrets.token_hex(8)}",
            "from": normalise_phone(sender),
            "to": normalise_phone(to),
            "text": text,
            "receivedAt": now(),
        }
        record: dict[str, Any] = {"attempts": 0, "httpStatus": None, "ok": False}
        sim.inbound.append({**payload, "webhook": record})
        sim.stats["inbound"] += 1
        sim.enqueue(payload, record)
        log.info("inbound %s from %s to %s", payload["id"], payload["from"], payload["to"])
        return JSONResponse({"id": payload["id"], "webhookUrl": sim.webhook_url or None}, status_code=202)

    @app.get("/_sim/inbound")
    async def inbound_log() -> list[dict[str, Any]]:
        return list(sim.inbound)

    @app.get("/_sim/rules")
    async def rules() -> dict[str, Any]:
        return {"rules": sim.rules, "outage": sim.outage}

    async def json_object(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    @app.post("/_sim/rules")
    async def set_rule(request: Request) -> JSONResponse:
        body = await json_object(request)
        suffix, action = body.get("suffix"), body.get("action")
        if not isinstance(suffix, str) or not re.fullmatch(r"\+?\d{1,15}", suffix) or action not in ACTIONS:
            return error(400, "INVALID_RULE", f"Want {{suffix: digits, action: one of {ACTIONS}}}")
        rule: dict[str, Any] = {"action": action}
        if action == "delay":
            try:
                rule["delaySeconds"] = max(0.0, float(body.get("delaySeconds", 5.0)))
            except (TypeError, ValueError):
                return error(400, "INVALID_RULE", "delaySeconds must be a number")
        sim.rules[suffix] = rule
        return JSONResponse({"rules": sim.rules})

    @app.delete("/_sim/rules/{suffix}")
    async def delete_rule(suffix: str) -> dict[str, Any]:
        sim.rules.pop(suffix, None)
        return {"rules": sim.rules}

    @app.post("/_sim/outage")
    async def outage(request: Request) -> dict[str, bool]:
        body = await json_object(request)
        sim.outage = bool(body.get("on"))
        log.warning("outage %s", "on" if sim.outage else "off")
        return {"outage": sim.outage}

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return {**sim.stats, "outage": sim.outage, "pending": sim.lifecycles, "webhookQueue": len(sim.outgoing)}

    @app.post("/_sim/reset")
    async def reset() -> dict[str, bool]:
        sim.reset()
        return {"reset": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="keep it on loopback: this is a dev tool")
    parser.add_argument("--port", type=int, default=8430)
    parser.add_argument("--api-key", default=os.environ.get("SMS_SIM_API_KEY", "sim_local_key"))
    parser.add_argument("--webhook-url", default=os.environ.get("SMS_SIM_WEBHOOK_URL", ""))
    parser.add_argument("--webhook-secret", default=os.environ.get("SMS_SIM_WEBHOOK_SECRET", "sim_local_whsec"))
    parser.add_argument(
        "--report-delay", type=float, default=float(os.environ.get("SMS_SIM_REPORT_DELAY", "0.5")),
        help="seconds before each delivery report (sent, then delivered)",
    )
    parser.add_argument(
        "--report-batch-ms", type=float, default=float(os.environ.get("SMS_SIM_REPORT_BATCH_MS", "50")),
        help="webhook items due within this window go out as one JSON list (up to 500); 0: one object each",
    )
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the simulator accepts anyone's messages and shows every inbox: loopback only")

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per webhook attempt is ours
    sim = Simulator(
        api_key=args.api_key,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        report_delay_s=args.report_delay,
        report_batch_s=args.report_batch_ms / 1000,
    )
    print(f"SMS simulator on http://{args.host}:{args.port} (webhook: {args.webhook_url or 'none'})", flush=True)
    started = time.monotonic()
    uvicorn.run(create_app(sim), host=args.host, port=args.port, log_level="warning", access_log=False)
    log.info("stopped after %.0fs", time.monotonic() - started)


if __name__ == "__main__":
    main()
