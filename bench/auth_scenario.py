"""Scenario "auth" (issue 3): what token verification costs a downstream service, and what
argon2 lets login do. See bench/README.md.

  1. Two uvicorn servers (bench/apps.py), each 1 worker, --no-access-log, the same loop/http:
     `bare` (GET /ping, no auth) and `auth` (the same endpoint depending on CurrentPrincipal,
     JWKS from the running auth service, cached). wrk loads them interleaved (bare, auth, bare,
     auth, ...) with the same headers, including the bearer token. Goal: the authenticated hot
     path keeps >= 80% of the bare throughput (median of the per-round ratios).
  2. For information: the real billing service's GET /whoami (full middleware: tracing,
     metrics, JSON logs), with the same wrk settings.
  3. Login throughput against the auth service (127.0.0.1:8101, one uvicorn worker) at a few
     concurrency levels, with a pool of pre-registered users (correct passwords, distinct
     X-Real-IP per client), next to the argon2 parameters and one hash/verify timed in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import httpx
from argon2 import PasswordHasher
from shared import (
    BENCH_DIR,
    HOST,
    ROOT,
    CpuMeter,
    cpu_seconds,
    percentiles,
    service_pid,
    superuser,
)

AUTH_URL = f"http://{HOST}:8101"
BILLING_URL = f"http://{HOST}:8105"
JWKS_URL = f"{AUTH_URL}/.well-known/jwks.json"
GOAL_HOT_PATH = 0.8
LOGIN_POOL_DOMAIN = "bench.example.com"
WRK_INSTALL_HINT = "wrk is not installed (make bench installs it: apt-get install -y -qq wrk)"


def log_step(message: str) -> None:
    print(f"  [auth] {message}", file=sys.stderr, flush=True)


# -- small helpers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def loop_http_options() -> list[str]:
    """What uvicorn's `auto` picks (the services run with the defaults), made explicit."""
    opts = []
    try:
        import uvloop  # noqa: F401

        opts += ["--loop", "uvloop"]
    except ImportError:
        opts += ["--loop", "asyncio"]
    try:
        import httptools  # noqa: F401

        opts += ["--http", "httptools"]
    except ImportError:
        opts += ["--http", "h11"]
    return opts


class Server:
    """One uvicorn server (1 worker) in a child process, on a free loopback port."""

    def __init__(self, name: str, factory: str) -> None:
        self.name = name
        self.factory = factory
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.log = tempfile.TemporaryFile()
        self.argv = [
            sys.executable, "-m", "uvicorn", factory, "--factory", "--app-dir", str(BENCH_DIR),
            "--host", HOST, "--port", str(self.port), "--workers", "1", "--no-access-log",
            "--log-level", "warning", *loop_http_options(),
        ]

    async def start(self, client: httpx.AsyncClient, limit_s: float) -> None:
        env = {**os.environ, "BENCH_JWKS_URL": JWKS_URL}
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            cwd=str(ROOT), env=env,
        )
        end = time.monotonic() + limit_s
        while time.monotonic() < end and self.proc.returncode is None:
            try:
                await client.get(f"{self.url}/ping", timeout=1)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} server did not start: {self.tail()}")

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-1500:].decode(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log.close()


# -- wrk --------------------------------------------------------------------------------------

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str, unit: str) -> float:
    return round(float(value) * _UNIT[unit], 3)


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["requests_per_s"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    if m:
        res["requests"] = int(m.group(1))
        res["seconds"] = round(_ms(m.group(2), m.group(3)) / 1000, 3)
    m = re.search(
        r"Latency\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)", out
    )
    if m:
        res["latency_mean_ms"] = _ms(m.group(1), m.group(2))
        res["latency_stdev_ms"] = _ms(m.group(3), m.group(4))
        res["latency_max_ms"] = _ms(m.group(5), m.group(6))
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        res[f"latency_p{pct}_ms"] = _ms(value, unit)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


def _server_cpu(pids: list[int]) -> float | None:
    used = [cpu_seconds(p) for p in pids]
    return None if not used or None in used else sum(used)  # type: ignore[arg-type]


async def run_wrk(
    cfg: argparse.Namespace,
    url: str,
    token: str,
    pid: int | list[int] | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One wrk run (bounded: -d, plus a hard timeout), with the server's CPU time around it
    (`pid`: its process, or all of them when it runs several). `extra`: more wrk arguments (a
    Lua script for POST bodies: `-s file.lua`)."""
    pids = [p for p in (pid if isinstance(pid, list) else [pid]) if p]
    argv = [
        "wrk", f"-t{cfg.wrk_threads}", f"-c{cfg.wrk_connections}", f"-d{cfg.wrk_seconds}s",
        "--timeout", "5s", "--latency", "-H", f"Authorization: Bearer {token}", *extra, url,
    ]
    # Every baseline before wrk starts: CpuMeter walks /proc, which is no work for the window.
    cpu0 = _server_cpu(pids)
    meter = CpuMeter({"server" if i == 0 else f"server_{i}": p for i, p in enumerate(pids)})
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), cfg.wrk_seconds + 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"wrk did not finish: {url}") from None
    cpu1 = _server_cpu(pids)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, reaped by communicate()
    wrk_cpu = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    cpu_busy = meter.result({"wrk": wrk_cpu})
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-500:]}")
    res = parse_wrk(text)
    if cpu0 is not None and cpu1 is not None and res.get("requests"):
        res["server_cpu_s"] = round(cpu1 - cpu0, 3)
        res["server_cpu_us_per_request"] = round((cpu1 - cpu0) / res["requests"] * 1e6, 1)
    res["cpu_cores_busy"] = cpu_busy
    res["ok"] = bool(res.get("requests_per_s")) and res["non_2xx"] == 0 and res["socket_errors"] == 0
    return res


# -- argon2 -----------------------------------------------------------------------------------


def argon2_info(seconds: float = 2.0) -> dict[str, Any]:
    """The parameters from services/auth/src/auth/settings.py (AuthSettings, with any SB_*
    overrides of this environment), one hash/verify timed here, and the parallel ceiling."""
    from auth.settings import AuthSettings

    s = AuthSettings()
    hasher = PasswordHasher(
        memory_cost=s.argon2_memory_kib, time_cost=s.argon2_time_cost, parallelism=s.argon2_parallelism
    )
    stored = hasher.hash("bench-password-x")
    hashes, verifies = [], []
    for _ in range(8):
        t = time.perf_counter()
        hasher.hash("bench-password-x")
        hashes.append(time.perf_counter() - t)
        t = time.perf_counter()
        hasher.verify(stored, "bench-password-x")
        verifies.append(time.perf_counter() - t)
    threads = os.cpu_count() or 1
    try:
        threads = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    counts = [0] * threads
    end = time.monotonic() + seconds

    def spin(i: int) -> None:
        while time.monotonic() < end:
            hasher.verify(stored, "bench-password-x")
            counts[i] += 1

    t0 = time.monotonic()
    workers = [threading.Thread(target=spin, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 10)
    elapsed = time.monotonic() - t0
    verify_s = statistics.median(verifies)
    return {
        "source": "services/auth/src/auth/settings.py (AuthSettings)",
        "algorithm": "argon2id",
        "memory_kib": s.argon2_memory_kib,
        "time_cost": s.argon2_time_cost,
        "parallelism": s.argon2_parallelism,
        "hash_ms_median": round(statistics.median(hashes) * 1000, 2),
        "verify_ms_median": round(verify_s * 1000, 2),
        "verify_ms_min": round(min(verifies) * 1000, 2),
        "parallel_threads": threads,
        "parallel_verifies_per_s": round(sum(counts) / elapsed, 1),
        # what login could reach on this machine if it did nothing but argon2
        "ceiling_logins_per_s": round(sum(counts) / elapsed, 1),
        "ideal_ceiling_logins_per_s": round(threads / verify_s, 1),
    }


async def stored_hash_params(email: str) -> str | None:
    """Cross-check: the parameters the running auth service actually used for a bench user's
    hash (read-only, as the local superuser over the unix socket)."""
    try:
        conn = await superuser(timeout=5)
    except Exception:  # noqa: BLE001
        return None
    try:
        value = await conn.fetchval(
            "SELECT split_part(password_hash, '$', 4) FROM auth.users WHERE email = $1", email
        )
        return value or None
    except Exception:  # noqa: BLE001
        return None
    finally:
        await conn.close()


async def verify_breakdown(token: str, n: int = 1000) -> dict[str, Any]:
    """In this process: what one TokenVerifier.verify costs, and its parts (microseconds)."""
    import base64

    import jwt
    from common.auth import ALGORITHM, TokenVerifier
    from common.settings import BaseServiceSettings

    settings = BaseServiceSettings(service_name="bench-auth", jwks_url=JWKS_URL)
    verifier = TokenVerifier(settings)
    await verifier.verify(token)  # fetches the JWKS once
    key = await verifier.jwks.key(jwt.get_unverified_header(token)["kid"])
    head, payload, sig = token.split(".")
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    signed = f"{head}.{payload}".encode()

    async def timed_async(fn) -> float:  # noqa: ANN001
        t = time.perf_counter()
        for _ in range(n):
            await fn()
        return round((time.perf_counter() - t) / n * 1e6, 1)

    def timed(fn) -> float:  # noqa: ANN001
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return round((time.perf_counter() - t) / n * 1e6, 1)

    return {
        "iterations": n,
        "verify_us": await timed_async(lambda: verifier.verify(token)),
        "get_unverified_header_us": timed(lambda: jwt.get_unverified_header(token)),
        "jwt_decode_us": timed(
            lambda: jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]}, leeway=5,
            )
        ),
        "ed25519_signature_check_us": timed(lambda: key.verify(signature, signed)),
        "dict_lookup_us": timed(lambda: {token: 1}.get(token)),
    }


# -- accounts and logins ----------------------------------------------------------------------


def pool_user(i: int) -> dict[str, str]:
    return {
        "email": f"bench-login-{i}@{LOGIN_POOL_DOMAIN}",
        "password": f"bench-login-password-{i}",
        "name": f"Bench login {i}",
    }


async def register(client: httpx.AsyncClient, body: dict[str, str], ip: str) -> httpx.Response:
    return await client.post(
        f"{AUTH_URL}/api/v1/users/register", json=body, headers={"X-Real-IP": ip}, timeout=30
    )


async def login_load(
    client: httpx.AsyncClient, users: list[dict[str, str]], concurrency: int, seconds: float,
    level_tag: int, auth_pid: int | None,
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    t0 = time.monotonic()
    end = t0 + seconds
    last_done = t0
    cpu0 = cpu_seconds(auth_pid)
    meter = CpuMeter({"auth_api": auth_pid, "bench_client": os.getpid()}, pg_roles=("auth",))

    async def worker(i: int) -> None:
        nonlocal last_done
        user = users[i % len(users)]
        headers = {"X-Real-IP": f"10.77.{level_tag}.{i + 1}"}
        body = {"email": user["email"], "password": user["password"]}
        for _ in range(10_000):
            if time.monotonic() >= end:
                return
            t = time.monotonic()
            try:
                r = await client.post(
                    f"{AUTH_URL}/api/v1/users/login", json=body, headers=headers, timeout=30
                )
                key = str(r.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
                if len(errors) < 5:
                    errors.append(repr(exc))
            done = time.monotonic()
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append(done - t)
            last_done = max(last_done, done)

    await asyncio.wait_for(
        asyncio.gather(*(worker(i) for i in range(concurrency))), seconds + 60
    )
    elapsed = last_done - t0
    cpu1 = cpu_seconds(auth_pid)
    cpu_busy = meter.result()
    ok = statuses.get("200", 0)
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "logins": ok,
        "logins_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
        "statuses": statuses,
        "latency": percentiles(latencies),
        "cpu_cores_busy": cpu_busy,
    }
    if cpu0 is not None and cpu1 is not None and elapsed > 0:
        out["auth_api_cpu_cores_busy"] = round((cpu1 - cpu0) / elapsed, 2)
        out["auth_api_cpu_ms_per_login"] = round((cpu1 - cpu0) / max(1, ok) * 1000, 1)
    if errors:
        out["errors"] = errors
    return out


# -- the scenario -----------------------------------------------------------------------------


async def run_auth(cfg: argparse.Namespace, deadline) -> dict[str, Any]:  # noqa: ANN001
    if shutil.which("wrk") is None:
        raise RuntimeError(WRK_INSTALL_HINT)
    out: dict[str, Any] = {"goal_hot_path_ratio": GOAL_HOT_PATH}
    out["argon2"] = await asyncio.to_thread(argon2_info)
    log_step(
        f"argon2id m={out['argon2']['memory_kib']} KiB t={out['argon2']['time_cost']} "
        f"p={out['argon2']['parallelism']}: verify {out['argon2']['verify_ms_median']} ms"
    )
    auth_pid, billing_pid = service_pid("auth-api"), service_pid("billing-api")

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:
        # a real access token: register a fresh user. Registrations are limited per client
        # address and hour (409s count too): each run registers from addresses of its own.
        reg_net = f"10.78.{secrets.randbelow(250) + 1}"
        email = f"{cfg.run_tag}@{LOGIN_POOL_DOMAIN}"
        r = await register(
            client, {"email": email, "password": "bench-token-password", "name": "Bench"},
            f"{reg_net}.1",
        )
        if r.status_code != 201:
            raise RuntimeError(f"register failed: {r.status_code} {r.text[:300]}")
        token = r.json()["data"]["accessToken"]
        out["argon2"]["stored_hash_params"] = await stored_hash_params(email)

        out["verify_in_process"] = await verify_breakdown(token)
        bare = Server("bare", "apps:create_bare_app")
        authed = Server("auth", "apps:create_auth_app")
        header = Server("header_only", "apps:create_header_app")
        out["servers"] = {
            "argv": [a for a in bare.argv if a not in (str(bare.port),)],
            "note": "1 uvicorn worker each; the same loop/http options as uvicorn's `auto` "
            "picks for the services",
        }
        try:
            await bare.start(client, deadline.cap(30))
            await authed.start(client, deadline.cap(30))
            await header.start(client, deadline.cap(30))
            hdr = {"Authorization": f"Bearer {token}"}
            checks = {
                "bare_200": (await client.get(f"{bare.url}/ping", headers=hdr)).status_code,
                "auth_without_token_401": (await client.get(f"{authed.url}/ping")).status_code,
                "auth_bad_token_401": (
                    await client.get(f"{authed.url}/ping", headers={"Authorization": "Bearer x.y.z"})
                ).status_code,
                "auth_200": (await client.get(f"{authed.url}/ping", headers=hdr)).status_code,
                "header_only_200": (
                    await client.get(f"{header.url}/ping", headers=hdr)
                ).status_code,
                "billing_whoami_200": (
                    await client.get(f"{BILLING_URL}/whoami", headers=hdr)
                ).status_code,
            }
            out["sanity"] = checks
            expected = {"bare_200": 200, "auth_without_token_401": 401, "auth_bad_token_401": 401,
                        "auth_200": 200, "header_only_200": 200, "billing_whoami_200": 200}
            if checks != expected:
                raise RuntimeError(f"sanity checks failed: {checks}")
            # warm both (JIT-free Python, but the first requests build caches/JWKS)
            for _ in range(50):
                await client.get(f"{bare.url}/ping", headers=hdr)
                await client.get(f"{authed.url}/ping", headers=hdr)

            rounds = []
            for i in range(cfg.auth_rounds):
                if deadline.remaining() < 2 * cfg.wrk_seconds + 10:
                    break
                log_step(f"wrk round {i + 1}: bare, auth")
                b = await run_wrk(cfg, f"{bare.url}/ping", token, bare.proc.pid)
                a = await run_wrk(cfg, f"{authed.url}/ping", token, authed.proc.pid)
                ratio = (
                    round(a["requests_per_s"] / b["requests_per_s"], 3)
                    if a.get("requests_per_s") and b.get("requests_per_s")
                    else None
                )
                rounds.append({"bare": b, "auth": a, "ratio": ratio})
            out["rounds"] = rounds
            # billing /whoami and the logins come after: keep their time
            reserve = cfg.wrk_seconds + 3 + len(cfg.login_concurrency) * (cfg.login_seconds + 2) + 5
            if deadline.remaining() > cfg.wrk_seconds + 3 + reserve:
                log_step("wrk header-only (diagnostics)")
                h = await run_wrk(cfg, f"{header.url}/ping", token, header.proc.pid)
                bare_rps = _median(r["bare"].get("requests_per_s") for r in rounds)
                h["ratio_to_bare_median"] = (
                    round(h["requests_per_s"] / bare_rps, 3)
                    if h.get("requests_per_s") and bare_rps
                    else None
                )
                h["note"] = "the same endpoint with a dependency that only reads the bearer "
                "header: the ceiling for auth with a verified-token cache"
                out["header_only"] = h
        finally:
            await bare.stop()
            await authed.stop()
            await header.stop()

        if deadline.remaining() > cfg.wrk_seconds + 10:
            log_step("wrk billing /whoami")
            try:  # information only: billing being restarted by someone must not cost the logins
                out["billing_whoami"] = await run_wrk(
                    cfg, f"{BILLING_URL}/whoami", token, billing_pid
                )
                out["billing_whoami"]["note"] = (
                    "the real service: tracing, metrics, JSON access/info logs, the same verifier"
                )
            except Exception as exc:  # noqa: BLE001
                out["billing_whoami"] = {"error": repr(exc)}
        else:
            out["billing_whoami"] = {"skipped": "time budget exhausted"}

        # login throughput
        pool = [pool_user(i) for i in range(max(cfg.login_concurrency, default=1))]
        created = 0
        for i, user in enumerate(pool):
            r = await register(client, user, f"{reg_net}.{i + 2}")
            if r.status_code == 201:
                created += 1
            elif r.status_code != 409:
                raise RuntimeError(f"pool registration failed: {r.status_code} {r.text[:300]}")
        logins = []
        for level in cfg.login_concurrency:
            if deadline.remaining() < cfg.login_seconds + 10:
                logins.append({"concurrency": level, "skipped": "time budget exhausted"})
                continue
            log_step(f"logins, concurrency {level}")
            logins.append(
                await login_load(client, pool, level, cfg.login_seconds, level, auth_pid)
            )
        out["login"] = {
            "url": f"{AUTH_URL}/api/v1/users/login",
            "pool_users": len(pool),
            "pool_users_created_now": created,
            "levels": logins,
            "argon2_ceiling_logins_per_s": out["argon2"]["ceiling_logins_per_s"],
            "note": "one uvicorn worker; argon2 runs in asyncio.to_thread (releases the GIL)",
        }

    ratios = [r["ratio"] for r in out.get("rounds", []) if r.get("ratio")]
    all_ok = all(r["bare"]["ok"] and r["auth"]["ok"] for r in out.get("rounds", []))
    median = round(statistics.median(ratios), 3) if ratios else None
    best_login = max(
        (lv.get("logins_per_s") or 0 for lv in out["login"]["levels"]), default=None
    )
    out["goals"] = {
        "hot_path_ratio_median": median,
        "hot_path_ratios": ratios,
        "hot_path_goal": GOAL_HOT_PATH,
        "hot_path_goal_met": median is not None and median >= GOAL_HOT_PATH and all_ok,
        "all_requests_ok": all_ok,
        "bare_rps_median": _median(r["bare"].get("requests_per_s") for r in out.get("rounds", [])),
        "auth_rps_median": _median(r["auth"].get("requests_per_s") for r in out.get("rounds", [])),
        "billing_whoami_rps": out["billing_whoami"].get("requests_per_s"),
        "logins_per_s_best": best_login,
    }
    return out


def _median(values) -> float | None:  # noqa: ANN001
    vals = [v for v in values if v]
    return round(statistics.median(vals), 1) if vals else None


def summarize_auth(au: dict[str, Any]) -> list[str]:
    if not au or "goals" not in au:
        return [f"  auth: not completed ({au.get('error') if au else 'not run'})"]
    g, a2 = au["goals"], au["argon2"]
    lines = ["  auth (1 uvicorn worker per server, wrk on 127.0.0.1)"]
    for i, r in enumerate(au.get("rounds", []), 1):
        b, a = r["bare"], r["auth"]
        lines.append(
            f"    round {i}: bare {b.get('requests_per_s')} rps (p99 {b.get('latency_p99_ms')} ms, "
            f"{b.get('server_cpu_us_per_request')} us CPU/req)  auth {a.get('requests_per_s')} rps "
            f"(p99 {a.get('latency_p99_ms')} ms, {a.get('server_cpu_us_per_request')} us CPU/req)  "
            f"ratio {r.get('ratio')}"
        )
    h = au.get("header_only") or {}
    if h.get("requests_per_s"):
        lines.append(
            f"    header-only dependency (diagnostics): {h.get('requests_per_s')} rps, "
            f"{h.get('server_cpu_us_per_request')} us CPU/req, ratio to bare "
            f"{h.get('ratio_to_bare_median')}"
        )
    v = au.get("verify_in_process") or {}
    if v:
        lines.append(
            f"    in process: verify {v.get('verify_us')} us = header "
            f"{v.get('get_unverified_header_us')} + jwt.decode {v.get('jwt_decode_us')} us "
            f"(of which Ed25519 {v.get('ed25519_signature_check_us')} us)"
        )
    bw = au.get("billing_whoami") or {}
    lines.append(
        f"    billing /whoami (full middleware): {bw.get('requests_per_s')} rps "
        f"(p99 {bw.get('latency_p99_ms')} ms, {bw.get('server_cpu_us_per_request')} us CPU/req)"
    )
    lines.append(
        f"    goal auth/bare >= {GOAL_HOT_PATH:.0%}: median {g['hot_path_ratio_median']} "
        f"{'MET' if g['hot_path_goal_met'] else 'NOT MET'}"
    )
    lines.append(
        f"    argon2id m={a2['memory_kib']} KiB t={a2['time_cost']} p={a2['parallelism']} "
        f"(stored hash: {a2.get('stored_hash_params')}): hash {a2['hash_ms_median']} ms, verify "
        f"{a2['verify_ms_median']} ms; {a2['parallel_threads']} threads verify "
        f"{a2['parallel_verifies_per_s']}/s"
    )
    for lv in au.get("login", {}).get("levels", []):
        if lv.get("skipped"):
            lines.append(f"    login c={lv['concurrency']}: skipped")
            continue
        lines.append(
            f"    login c={lv['concurrency']}: {lv.get('logins_per_s')} logins/s "
            f"(p50 {lv['latency'].get('p50_ms')} ms, p99 {lv['latency'].get('p99_ms')} ms; "
            f"auth-api {lv.get('auth_api_cpu_cores_busy')} cores busy, "
            f"{lv.get('auth_api_cpu_ms_per_login')} ms CPU/login; statuses {lv.get('statuses')})"
        )
    dist = au.get("disturbance") or {}
    if dist.get("disturbed"):
        lines.append(f"    WARNING: disturbed (restarted: {dist.get('restarted')})")
    if dist.get("noisy"):
        lines.append(
            f"    WARNING: noisy: processes outside the benchmark used up to "
            f"{dist.get('max_cores_used_outside_benchmark')} cores during a phase"
        )
    return lines
