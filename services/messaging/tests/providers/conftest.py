"""Real peers on 127.0.0.1 for the provider adapters: SMS simulator processes
(scripts/sms_simulator.py), a moto server (AWS SNS), and a small HTTP receiver that records the
delivery reports the simulators post."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[4]
SIMULATOR = ROOT / "scripts" / "sms_simulator.py"
API_KEY = "sim_test_key"
WEBHOOK_SECRET = "sim_test_whsec"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def us_number() -> str:
    """A valid US number that no default simulator rule matches (those end in 0001..0005)."""
    return f"+1415555{random.randint(1000, 9999)}"


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout}s:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the delivery-report receiver ----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def _item_ids(body: bytes) -> set[str]:
    try:
        data = json.loads(body)
    except ValueError:  # a post cut short under load (the simulator retries it whole)
        return set()
    return {item.get("id") for item in (data if isinstance(data, list) else [data])}


class Receiver:
    """Records every POST; answers `status` (settable, to play an endpoint that is not there)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, provider: str) -> str:
        return f"{self.base}/api/v1/webhooks/sms/{provider}"

    def for_message(self, provider_message_id: str) -> list[Received]:
        """The requests carrying an item about this message (a batch counts once)."""
        with self._lock:
            return [r for r in self.requests if provider_message_id in _item_ids(r.body)]

    async def wait_for(self, provider_message_id: str, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.for_message(provider_message_id)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} reports for {provider_message_id} not received: {self.for_message(provider_message_id)}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def receiver():
    r = Receiver()
    yield r
    r.close()


# -- SMS simulator processes ---------------------------------------------------------------------


class Simulator:
    def __init__(self, name: str, webhook_url: str, log_dir: Path, batch_ms: float = 0) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook_url = webhook_url
        self.webhook_secret = WEBHOOK_SECRET
        self.log = log_dir / f"sms-simulator-{name}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable, str(SIMULATOR), "--port", str(self.port), "--api-key", API_KEY,
                "--webhook-url", webhook_url, "--webhook-secret", WEBHOOK_SECRET,
                "--report-delay", "0.05", "--report-batch-ms", str(batch_ms),
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        wait_http(f"{self.url}/health", self.proc, self.log)

    def provider(self, name: str = "simulator", *, api_key: str = API_KEY, secrets=(WEBHOOK_SECRET,)):
        """The HTTP gateway adapter pointed at this simulator."""
        from messaging.providers.http_gateway import HttpGatewayProvider

        return HttpGatewayProvider(name, base_url=self.url, api_key=api_key, webhook_secrets=secrets, timeout_s=5)

    async def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            response = await client.request(method, path, **kwargs)
            response.raise_for_status()
            return response

    async def reset(self) -> None:
        await self._call("POST", "/_sim/reset")

    async def outage(self, on: bool) -> None:
        await self._call("POST", "/_sim/outage", json={"on": on})

    async def rule(self, suffix: str, action: str, **extra) -> None:
        await self._call("POST", "/_sim/rules", json={"suffix": suffix, "action": action, **extra})

    async def inbox(self, phone: str) -> list[dict]:
        return (await self._call("GET", f"/_sim/inbox/{phone}")).json()

    async def wait_inbox(self, phone: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self.inbox(phone)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{phone}'s inbox at {self.name} has {len(found)} messages, not {count}")

    async def stats(self) -> dict:
        return (await self._call("GET", "/_sim/stats")).json()

    async def messages(self, since: int = 0) -> dict:
        return (await self._call("GET", "/_sim/messages", params={"since": since})).json()

    def close(self) -> None:
        stop(self.proc)


@pytest.fixture(scope="session")
def simulators(receiver, tmp_path_factory):
    """Simulator processes ("sim-a", "sim-b" posting one report per request, "sim-batch"
    batching them), each posting to the receiver under its own provider path."""
    log_dir = tmp_path_factory.mktemp("sms-simulators")
    started = {name: Simulator(name, receiver.url(name), log_dir) for name in ("sim-a", "sim-b")}
    # Posts due items together, as the local stack's simulator does (50 ms window).
    started["sim-batch"] = Simulator("sim-batch", receiver.url("sim-batch"), log_dir, batch_ms=50)
    for sim in started.values():  # both were started at once: Python's start-up dominates
        sim.wait_ready()
    yield started
    for sim in started.values():
        sim.close()


@pytest.fixture
async def sim_a(simulators) -> Simulator:
    await simulators["sim-a"].reset()
    return simulators["sim-a"]


@pytest.fixture
async def sim_b(simulators) -> Simulator:
    await simulators["sim-b"].reset()
    return simulators["sim-b"]


@pytest.fixture
async def sim_batch(simulators) -> Simulator:
    await simulators["sim-batch"].reset()
    return simulators["sim-batch"]


@pytest.fixture
def new_phone():
    """Makes valid US numbers that no default simulator rule matches."""
    return us_number


@pytest.fixture
def nowhere() -> str:
    """The URL of a port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


# -- moto (AWS) ----------------------------------------------------------------------------------


class Moto:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "moto.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/moto-api/data.json", self.proc, self.log, timeout=60)

    async def published_sms(self) -> list[dict]:
        """What moto's SNS backend recorded as sent by SMS: [{message_id, phone_number, message}]."""
        async with httpx.AsyncClient(timeout=10) as client:
            data = (await client.get(f"{self.url}/moto-api/data.json")).json()
        return data.get("sns", {}).get("SMS", [])

    def close(self) -> None:
        stop(self.proc)


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = Moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.close()
