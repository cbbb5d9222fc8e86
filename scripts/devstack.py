"""The local stack: PostgreSQL, Redis, Kafka (KRaft), the six services and the nginx gateway.

Every process runs under one supervisord (its pid file and socket live in .local/run), so
`down` stops exactly what `up` started. `up` is idempotent: it starts what is not running,
creates the database roles and schemas, runs every service's migrations, creates the Kafka
topics, starts the services and the gateway, and waits until every /ready is green.

    python scripts/devstack.py up | down | status | ctl <supervisorctl args...>
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import os
import shutil
import string
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
RUN = LOCAL / "run"
LOGS = LOCAL / "logs"
PY = sys.executable

PG_PORT = 55432
REDIS_PORT = 56379
KAFKA_PORT = 59092
KAFKA_CONTROLLER_PORT = 59093
GATEWAY_PORT = 8080
# Stripe fake (localstripe, dev/test only) and what billing is configured with against it.
LOCALSTRIPE_PORT = 8420
STRIPE_WEBHOOK_SECRETS = ("whsec_local_1", "whsec_local_2")  # the second one: rotation
# SMS providers for messaging (dev/test only): the SMS simulator (scripts/sms_simulator.py, the
# HTTP gateway wire format, an inbox per phone at /_sim/inbox/{phone}) and moto as a local AWS
# SNS, the fallback route when the simulator has an outage (POST /_sim/outage {"on": true}).
SMS_SIMULATOR_PORT = 8430
MOTO_PORT = 8431
SMS_SIMULATOR_API_KEY = "sim_local_key"
SMS_SIMULATOR_WEBHOOK_SECRET = "sim_local_whsec"
SMS_WEBHOOK_BASE = f"http://127.0.0.1:{GATEWAY_PORT}/api/v1/webhooks/sms"
DATABASE = "switchboard"


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    # uvicorn worker processes of the API: the send path of messaging is CPU-bound in Python
    # (one process uses one core); the others are light.
    api_processes: int = 1

    @property
    def worker_metrics_port(self) -> int:
        return self.port + 1000  # 9101..9106: the worker's /metrics (events, relay)

    @property
    def pkg(self) -> str:
        return self.name.replace("-", "_")

    @property
    def role(self) -> str:
        return self.pkg


SERVICES = [
    Service("auth", 8101),
    Service("messaging", 8102, api_processes=2),
    Service("chat", 8103),
    Service("media", 8104),
    Service("billing", 8105),
    Service("provider-sync", 8106),
]


def service_env(svc: Service) -> dict[str, str]:
    return {
        "SB_ENVIRONMENT": "local",
        "SB_DATABASE_URL": (
            f"postgresql+asyncpg://{svc.role}:{svc.role}@127.0.0.1:{PG_PORT}/{DATABASE}"
        ),
        "SB_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "SB_KAFKA_BOOTSTRAP": f"127.0.0.1:{KAFKA_PORT}",
        "SB_JWKS_URL": "http://127.0.0.1:8101/.well-known/jwks.json",
        "SB_DB_POOL_SIZE": "5",
        "SB_WORKER_METRICS_PORT": str(svc.worker_metrics_port),
        **(stripe_env() if svc.name == "billing" else {}),
        **(sms_env() if svc.name == "messaging" else {}),
    }


def stripe_env() -> dict[str, str]:
    """billing -> localstripe (a JSON list: pydantic-settings parses it)."""
    secrets = ",".join(f'"{s}"' for s in STRIPE_WEBHOOK_SECRETS)
    return {
        "SB_STRIPE_API_BASE": f"http://127.0.0.1:{LOCALSTRIPE_PORT}",
        "SB_STRIPE_API_KEY": "sk_test_local",
        "SB_STRIPE_WEBHOOK_SECRETS": f"[{secrets}]",
    }


def sms_env() -> dict[str, str]:
    """messaging -> the SMS simulator first, then SNS on moto (JSON values: pydantic parses them)."""
    return {
        "SB_SMS_ROUTES": '{"*":["simulator","sns"]}',
        "SB_SMS_WEBHOOK_BASE_URL": SMS_WEBHOOK_BASE,
        "SB_SMS_SIMULATOR_BASE_URL": f"http://127.0.0.1:{SMS_SIMULATOR_PORT}",
        "SB_SMS_SIMULATOR_API_KEY": SMS_SIMULATOR_API_KEY,
        "SB_SMS_SIMULATOR_WEBHOOK_SECRETS": f'["{SMS_SIMULATOR_WEBHOOK_SECRET}"]',
        "SB_SMS_SNS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
        "SB_SMS_SNS_REGION": "us-east-1",
        "SB_SMS_SNS_ACCESS_KEY_ID": "testing",
        "SB_SMS_SNS_SECRET_ACCESS_KEY": "testing",
    }


# -- configuration files ---------------------------------------------------------------------


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        sys.exit("PostgreSQL is not installed: run scripts/install.sh")
    return Path(found[-1]).parent


def write_kafka_config() -> Path:
    kdir = LOCAL / "kafka"
    (kdir / "data").mkdir(parents=True, exist_ok=True)
    props = kdir / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{KAFKA_CONTROLLER_PORT}",
                f"listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT},CONTROLLER://127.0.0.1:{KAFKA_CONTROLLER_PORT}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={kdir / 'data'}",
                "num.partitions=3",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=72",
                "",
            ]
        )
    )
    if not (kdir / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            [
                "java", "-cp", str(kdir / "libs" / "*"),
                f"-Dlog4j2.configurationFile={ROOT / 'scripts/kafka/log4j2.properties'}",
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return props


def ensure_pg_home() -> None:
    """PostgreSQL refuses to run as root, so it runs as `postgres`, which must be able to reach
    its data. When the checkout lies under a folder that user cannot enter (a private home, say),
    the data goes under /var/lib and .local/pg is a symlink to it."""
    home = LOCAL / "pg"
    if home.exists() or home.is_symlink():
        return
    LOCAL.mkdir(parents=True, exist_ok=True)
    reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(LOCAL)]).returncode == 0
    if reachable:
        home.mkdir()
        return
    import hashlib

    target = Path("/var/lib/switchboard-dev") / hashlib.sha1(str(ROOT).encode()).hexdigest()[:12] / "pg"
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent.parent, 0o755)
    os.chmod(target.parent, 0o755)
    home.symlink_to(target)


def init_postgres() -> Path:
    ensure_pg_home()
    home = (LOCAL / "pg").resolve()  # the real path: `postgres` may not traverse .local
    data = home / "data"
    sock = home / "run"
    sock.mkdir(parents=True, exist_ok=True)
    shutil.chown(home, "postgres", "postgres")
    shutil.chown(sock, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postgres", "postgres")
        subprocess.run(
            [
                "runuser", "-u", "postgres", "--", str(pg_bindir() / "initdb"),
                "-D", str(data), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return data


def render_gateway() -> Path:
    gdir = LOCAL / "gateway"
    for sub in ("logs", "tmp"):
        (gdir / sub).mkdir(parents=True, exist_ok=True)
    ups = {s.pkg.upper(): f"127.0.0.1:{s.port}" for s in SERVICES}
    template = string.Template((ROOT / "gateway" / "nginx.conf.template").read_text())
    conf = gdir / "nginx.conf"
    conf.write_text(
        template.substitute(
            LISTEN=f"127.0.0.1:{GATEWAY_PORT}",
            RUNTIME_DIR=str(gdir),
            RATE=os.environ.get("SB_GATEWAY_RATE", "5000r/s"),
            BURST=os.environ.get("SB_GATEWAY_BURST", "10000"),
            BODY_LIMIT="10m",
            MEDIA_BODY_LIMIT="50m",
            **ups,
        )
    )
    return conf


def write_supervisor_config() -> Path:
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    pg_data = init_postgres()
    kafka_props = write_kafka_config()
    nginx_conf = render_gateway()
    bindir = pg_bindir()
    sections = [
        f"""[unix_http_server]
file={RUN}/supervisor.sock

[supervisord]
pidfile={RUN}/supervisord.pid
logfile={LOGS}/supervisord.log
directory={ROOT}
minfds=4096

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{RUN}/supervisor.sock
""",
        program(
            "postgres",
            f"{bindir}/postgres -D {pg_data} -h 127.0.0.1 -p {PG_PORT} -k {pg_data.parent / 'run'} "
            # shared_buffers as a managed database sizes it (RDS: about a quarter of the memory),
            # not Debian's 128 MB: with that, one 10,000-recipient send evicted and wrote about
            # 9,800 dirty pages inside its own statement. max_wal_size as RDS's default.
            "-c max_connections=300 -c fsync=on -c synchronous_commit=on -c log_min_messages=warning "
            "-c shared_buffers=1GB -c max_wal_size=2GB",
            user="postgres", stopsignal="INT", priority=10, autostart=True,
        ),
        program(
            "redis",
            f"redis-server --port {REDIS_PORT} --bind 127.0.0.1 --save \"\" --appendonly no",
            priority=10, autostart=True,
        ),
        program(
            "kafka",
            # The JVM options of Kafka's own kafka-server-start.sh / kafka-run-class.sh: a fixed
            # 1 GB heap and G1 aiming at 20 ms pauses. With 512 MB and the JVM's defaults the old
            # generation sat at 82-89 % and young collections took 18 ms on average.
            f"java -Xmx1G -Xms1G -XX:+UseG1GC -XX:MaxGCPauseMillis=20 "
            f"-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent "
            f"-Djava.awt.headless=true -cp \"{LOCAL}/kafka/libs/*\" "
            f"-Dlog4j2.configurationFile={ROOT}/scripts/kafka/log4j2.properties "
            f"kafka.Kafka {kafka_props}",
            priority=10, autostart=True, stopwaitsecs=30,
        ),
        # localstripe signs its events with the first secret and posts them through the gateway.
        program(
            "localstripe",
            f"{PY} {ROOT}/scripts/localstripe_server.py --host 127.0.0.1 --port {LOCALSTRIPE_PORT} "
            f"--webhook http://127.0.0.1:{GATEWAY_PORT}/api/v1/payments/webhook={STRIPE_WEBHOOK_SECRETS[0]}",
            priority=10, autostart=True,
        ),
        # Posts signed delivery reports to messaging's webhook through the gateway (retried with
        # backoff while that endpoint answers 404).
        program(
            "sms-simulator",
            f"{PY} {ROOT}/scripts/sms_simulator.py --host 127.0.0.1 --port {SMS_SIMULATOR_PORT} "
            f"--api-key {SMS_SIMULATOR_API_KEY} --webhook-secret {SMS_SIMULATOR_WEBHOOK_SECRET} "
            f"--webhook-url {SMS_WEBHOOK_BASE}/simulator",
            priority=10, autostart=True,
        ),
        # moto (a local AWS, dev/test only) for the SNS provider; it records every SMS published
        # (GET /moto-api/data.json, under "sns" -> "SMS").
        program(
            "moto",
            f"{PY} -m moto.server -H 127.0.0.1 -p {MOTO_PORT}",
            priority=10, autostart=True,
        ),
        program("gateway", f"nginx -c {nginx_conf} -p {LOCAL}/gateway", priority=30, stopsignal="QUIT"),
    ]
    for svc in SERVICES:
        # Single quotes around values that hold double quotes (a JSON list); supervisord strips either.
        env = ",".join(f"{k}='{v}'" if '"' in v else f'{k}="{v}"' for k, v in service_env(svc).items())
        serve = (
            f"{PY} -m uvicorn {svc.pkg}.app:create_app --factory --host 127.0.0.1 "
            f"--port {svc.port} --no-access-log"
        )
        api_env = env
        if svc.api_processes > 1:
            # Several processes: their metrics are summed through files (prometheus-client's
            # multiprocess mode), in a folder emptied before they start.
            metrics_dir = RUN / "prometheus" / f"{svc.name}-api"
            serve = (
                f"sh -c 'rm -rf {metrics_dir} && mkdir -p {metrics_dir} && "
                f"exec {serve} --workers {svc.api_processes}'"
            )
            api_env = f'{env},PROMETHEUS_MULTIPROC_DIR="{metrics_dir}"'
        sections.append(
            program(f"{svc.name}-api", serve, environment=api_env, priority=20, stopsignal="TERM")
        )
        sections.append(
            program(
                f"{svc.name}-worker",
                f"{PY} -m {svc.pkg}.worker",
                environment=env, priority=20, stopsignal="TERM",
            )
        )
    path = RUN / "supervisord.conf"
    path.write_text("\n".join(sections))
    return path


def program(name: str, command: str, *, autostart: bool = False, **opts: object) -> str:
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"autostart={'true' if autostart else 'false'}",
        "autorestart=true",
        "startsecs=1",
        "startretries=10",
        "stopasgroup=true",
        "killasgroup=true",
        f"stdout_logfile={LOGS}/{name}.log",
        "stdout_logfile_maxbytes=20MB",
        "stdout_logfile_backups=2",
        "redirect_stderr=true",
    ]
    lines += [f"{k}={v}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


# -- supervisor ------------------------------------------------------------------------------


def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "supervisor.supervisorctl", "-c", str(RUN / "supervisord.conf"), *args],
        check=check,
        text=True,
        capture_output=True,
    )


def supervisord_running() -> bool:
    pidfile = RUN / "supervisord.pid"
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return ctl("pid", check=False).returncode == 0


# -- bootstrap -------------------------------------------------------------------------------


async def wait_infra(timeout: float = 120.0) -> None:
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "cannot connect" is expected here
    import asyncpg
    import redis.asyncio as aioredis
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    pending = {"postgres", "redis", "kafka"}
    while pending:
        if time.monotonic() > deadline:
            sys.exit(f"infrastructure not up after {timeout:.0f}s: {sorted(pending)} (see {LOGS})")
        if "postgres" in pending:
            try:
                conn = await asyncpg.connect(host=str(LOCAL / "pg" / "run"), port=PG_PORT, user="postgres", database="postgres")
                await conn.close()
                pending.discard("postgres")
            except Exception:  # noqa: BLE001
                pass
        if "redis" in pending:
            try:
                r = aioredis.from_url(f"redis://127.0.0.1:{REDIS_PORT}")
                await r.ping()
                await r.aclose()
                pending.discard("redis")
            except Exception:  # noqa: BLE001
                pass
        if "kafka" in pending:
            admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}", request_timeout_ms=3000)
            try:
                await admin.start()
                await admin.list_topics()
                pending.discard("kafka")
            except Exception:  # noqa: BLE001
                pass
            finally:
                await admin.close()
        if pending:
            await asyncio.sleep(0.5)


async def bootstrap_database() -> None:
    """One database; one role and one schema per service, each owned by its role."""
    import asyncpg

    sock = str(LOCAL / "pg" / "run")
    conn = await asyncpg.connect(host=sock, port=PG_PORT, user="postgres", database="postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(host=sock, port=PG_PORT, user="postgres", database=DATABASE)
    try:
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        for svc in SERVICES:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", svc.role):
                await conn.execute(f"CREATE ROLE {svc.role} LOGIN PASSWORD '{svc.role}'")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {svc.role} AUTHORIZATION {svc.role}")
            await conn.execute(f"REVOKE ALL ON SCHEMA {svc.role} FROM PUBLIC")
            await conn.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {svc.role}")
    finally:
        await conn.close()


def migrate() -> None:
    for svc in SERVICES:
        env = {**os.environ, **service_env(svc)}
        subprocess.run(
            [PY, "-m", "alembic", "-c", str(ROOT / "services" / svc.name / "alembic.ini"), "upgrade", "head"],
            check=True,
            env=env,
            cwd=ROOT / "services" / svc.name,
        )


async def create_topics() -> list[str]:
    from common.contracts import all_topics
    from common.messaging.kafka import ensure_topics
    from common.settings import BaseServiceSettings

    settings = BaseServiceSettings(service_name="devstack", kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}")
    return await ensure_topics(settings, all_topics())


async def wait_ready(timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    extra = {  # what is not a service, and the URL that answers 200 once it is up
        "gateway": f"http://127.0.0.1:{GATEWAY_PORT}/health",
        "sms-simulator": f"http://127.0.0.1:{SMS_SIMULATOR_PORT}/health",
        "moto": f"http://127.0.0.1:{MOTO_PORT}/moto-api/data.json",
    }
    pending = {s.name for s in SERVICES} | set(extra)
    last: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=3) as client:
        while pending:
            for name in sorted(pending):
                if name in extra:
                    url = extra[name]
                else:
                    url = f"http://127.0.0.1:{next(s.port for s in SERVICES if s.name == name)}/ready"
                try:
                    r = await client.get(url)
                    if r.status_code == 200:
                        pending.discard(name)
                    else:
                        last[name] = r.text[:300]
                except httpx.HTTPError as exc:
                    last[name] = repr(exc)
            if pending:
                if time.monotonic() > deadline:
                    detail = "; ".join(f"{n}: {last.get(n)}" for n in sorted(pending))
                    sys.exit(f"not ready after {timeout:.0f}s: {detail} (logs in {LOGS})")
                await asyncio.sleep(0.5)


# -- commands --------------------------------------------------------------------------------


def up(quiet: bool = False) -> None:
    started = time.monotonic()
    conf = write_supervisor_config()
    if supervisord_running():
        ctl("reread", check=False)
        ctl("update", check=False)
    else:
        subprocess.run([PY, "-m", "supervisor.supervisord", "-c", str(conf)], check=True)
    ctl("start", "postgres", "redis", "kafka", "localstripe", check=False)
    asyncio.run(wait_infra())
    asyncio.run(bootstrap_database())
    migrate()
    created = asyncio.run(create_topics())
    ctl("start", "all", check=False)
    ctl("signal", "HUP", "gateway", check=False)  # a re-run picks up a changed gateway config
    asyncio.run(wait_ready())
    if not quiet:
        print(f"Switchboard is up ({time.monotonic() - started:.1f}s).")
        if created:
            print(f"  created topics: {', '.join(created)}")
        print(f"  gateway        http://127.0.0.1:{GATEWAY_PORT}  (health: /health)")
        for svc in SERVICES:
            print(
                f"  {svc.name:<14} http://127.0.0.1:{svc.port}  (docs: /docs, ready: /ready; "
                f"worker metrics: :{svc.worker_metrics_port}/metrics)"
            )
        print(f"  postgres       127.0.0.1:{PG_PORT} db={DATABASE} (role=password=<service>)")
        print(f"  redis          redis://127.0.0.1:{REDIS_PORT}")
        print(f"  kafka          127.0.0.1:{KAFKA_PORT}")
        print(f"  localstripe    http://127.0.0.1:{LOCALSTRIPE_PORT}  (Stripe fake, key sk_test_local)")
        print(
            f"  sms-simulator  http://127.0.0.1:{SMS_SIMULATOR_PORT}  (SMS provider fake; a phone's "
            f"messages: /_sim/inbox/+14155550123)"
        )
        print(f"  moto (SNS)     http://127.0.0.1:{MOTO_PORT}  (AWS fake; SMS sent: /moto-api/data.json)")
        print(f"  logs           {LOGS}")
        print("Stop it with: make dev-down")


def down() -> None:
    if not supervisord_running():
        print("not running")
        return
    pid = int((RUN / "supervisord.pid").read_text().strip())
    ctl("shutdown", check=False)
    for _ in range(600):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("stopped")
            return
        time.sleep(0.1)
    sys.exit(f"supervisord {pid} did not stop in 60s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "ctl"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    parser.add_argument("--quiet", action="store_true")
    ns = parser.parse_args()
    if ns.command == "up":
        up(ns.quiet)
    elif ns.command == "down":
        down()
    elif ns.command == "status":
        if not supervisord_running():
            print("not running")
            sys.exit(3)
        print(ctl("status", check=False).stdout, end="")
    else:
        result = ctl(*ns.args, check=False)
        print(result.stdout, end="")
        sys.exit(result.returncode)


if __name__ == "__main__":
    main()
