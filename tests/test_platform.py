"""The platform through the gateway: health, readiness, metrics, OpenAPI, envelopes, limits."""

from __future__ import annotations

import asyncio
import socket
import string
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from common.messaging.relay import _PURGE, _PURGE_INBOX

from tests.support import SERVICE_PORTS, superuser

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["auth", "messaging", "chat", "media", "billing", "provider-sync"]


async def test_gateway_answers_health_in_the_envelope(gateway):
    r = await gateway.get("/health")
    assert r.status_code == 200
    assert r.json() == {"success": True, "data": {"status": "ok", "service": "gateway"}}


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_is_ready_and_serves_metrics_and_openapi(gateway, service):
    ready = await gateway.get(f"/_svc/{service}/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["data"]["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "ok"}
    health = await gateway.get(f"/_svc/{service}/health")
    assert health.json()["data"]["service"] == service
    metrics = await gateway.get(f"/_svc/{service}/metrics")
    assert "sb_http_requests_total" in metrics.text
    spec = await gateway.get(f"/_svc/{service}/openapi.json")
    assert spec.json()["info"]["title"] == f"Switchboard {service}"


def _counted(text: str, route: str, status: str) -> float:
    """sb_http_requests_total for GET `route` answered `status`, from a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("sb_http_requests_total{") and f'route="{route}"' in line \
                and 'method="GET"' in line and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_service_running_several_processes_reports_the_metrics_of_all_of_them():
    """messaging-api runs two uvicorn processes: whichever answers the scrape reports the
    requests both of them handled."""
    route = "/api/v1/sms/numbers"
    url = f"http://127.0.0.1:{SERVICE_PORTS['messaging']}"

    async def scrape() -> float:
        async with httpx.AsyncClient(base_url=url) as client:
            return _counted((await client.get("/metrics")).text, route, "401")

    before = await scrape()
    for _ in range(40):  # a new connection each: the kernel spreads them over the processes
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get(route)).status_code == 401
    for _ in range(5):  # any process may answer; each must see all 40
        assert await scrape() - before == 40


@pytest.mark.parametrize("service", SERVICES)
async def test_the_relays_purge_reads_an_index_not_the_whole_outbox_and_inbox(service):
    """Every service's worker purges its outbox and inbox every minute. Without an index on
    what the purge filters by, each pass read the whole table to find nothing to delete
    (1.7 s a pass on a 3.4 GB outbox). Sequential scans are priced out here, so the plan names
    a sequential scan only if no index can answer the purge's filter."""
    schema = service.replace("-", "_")
    async with superuser() as conn, conn.transaction():
        await conn.execute(f'SET LOCAL search_path = "{schema}"')
        await conn.execute("SET LOCAL enable_seqscan = off")
        for statement, args in ((_PURGE, [86400.0]), (_PURGE_INBOX, [])):
            sql = str(statement).replace(":keep", "$1")
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *args))
            assert "Seq Scan" not in plan, plan


async def test_request_id_is_kept_or_minted(gateway):
    kept = await gateway.get("/_svc/auth/health", headers={"X-Request-ID": "my-req-42"})
    assert kept.headers["x-request-id"] == "my-req-42"
    minted = await gateway.get("/_svc/auth/health")
    assert len(minted.headers["x-request-id"]) >= 16


async def test_unknown_path_is_a_json_404(gateway):
    r = await gateway.get("/no/such/thing")
    assert r.status_code == 404
    assert r.json()["success"] is False and r.json()["code"] == "NOT_FOUND"


async def test_oversized_body_is_refused_with_a_json_413_before_reaching_a_service(gateway):
    r = await gateway.post(
        "/api/v1/users/register",
        content=b"x" * (11 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-email", "password": "longenough1", "name": "A"}, "email"),
        ({"email": "a@b.example", "password": "short", "name": "A"}, "password"),
        ({"email": "a@b.example", "password": "longenough1", "name": "x" * 101}, "name"),
        ({"email": "a@b.example", "password": "longenough1", "name": "A", "role": "ADMIN"}, "role"),
        ({"email": "a@b.example", "password": "longenough1", "name": "A", "isAdmin": True}, "isAdmin"),
    ],
)
async def test_bad_registration_input_is_a_422_envelope_naming_the_field(gateway, body, field):
    r = await gateway.post("/api/v1/users/register", json=body)
    assert r.status_code == 422
    payload = r.json()
    assert payload["success"] is False and payload["code"] == "VALIDATION_ERROR"
    assert any(d["field"] == field for d in payload["details"]), payload


async def test_seed_alias_paths_reach_the_same_endpoint(gateway):
    r = await gateway.post("/api/auth/login", json={"email": "nobody@x.example", "password": "p"})
    assert r.status_code == 401 and r.json()["code"] == "INVALID_CREDENTIALS"


def test_compose_file_describes_the_same_topology():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for infra in ("postgres", "redis", "kafka", "gateway"):
        assert infra in services
    images = " ".join(str(s.get("image", "")) for s in services.values())
    assert "postgres" in images and "redis" in images and "apache/kafka" in images
    for name in SERVICES:
        matching = [k for k in services if k.startswith(name)]
        assert len(matching) >= 2, f"{name}: want an api and a worker container, got {matching}"
    # The stand-ins for outside parties (localstripe is GPL-3.0: dev/test only) run only under
    # the `dev` profile, and nothing else is optional.
    fakes = {"localstripe", "sms-simulator"}
    assert {k for k, s in services.items() if "profiles" in s} == fakes
    for fake in fakes:
        assert services[fake]["profiles"] == ["dev"], fake
    for name in ("billing", "billing-worker"):
        assert {"SB_STRIPE_API_BASE", "SB_STRIPE_API_KEY", "SB_STRIPE_WEBHOOK_SECRETS"} <= set(services[name]["environment"]), name
    for name in ("messaging", "messaging-worker"):
        assert {"SB_SMS_ROUTES", "SB_SMS_WEBHOOK_BASE_URL", "SB_SMS_SIMULATOR_BASE_URL"} <= set(services[name]["environment"]), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_per_ip_rate_limit_answers_json_429(tmp_path):
    """The gateway template rendered with a tiny limit, on its own nginx, in front of auth."""
    port = _free_port()
    conf = tmp_path / "nginx.conf"
    ups = {k: "127.0.0.1:8101" for k in ("AUTH", "MESSAGING", "CHAT", "MEDIA", "BILLING", "PROVIDER_SYNC")}
    template = string.Template((ROOT / "gateway/nginx.conf.template").read_text())
    conf.write_text(
        template.substitute(
            LISTEN=f"127.0.0.1:{port}", RUNTIME_DIR=str(tmp_path), RATE="5r/s", BURST="5",
            BODY_LIMIT="1m", MEDIA_BODY_LIMIT="2m", **ups,
        )
    )
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp_path)])
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(50):
                try:
                    await client.get("/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            replies = await asyncio.gather(*(client.get("/_svc/auth/health") for _ in range(30)))
        codes = [r.status_code for r in replies]
        assert codes.count(200) >= 1 and codes.count(429) >= 10, codes
        limited = next(r for r in replies if r.status_code == 429)
        assert limited.json()["code"] == "RATE_LIMITED"
    finally:
        nginx.terminate()
        nginx.wait(10)
