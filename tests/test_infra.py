"""infra/terraform (and docker-compose.yml) against the services they deploy, read as HCL (python-hcl2): no Terraform binary
or AWS provider is available here, so `plan` cannot run, but what the tasks are given can be
checked against what the code reads.

The settings classes ignore environment variables they do not know (`extra="ignore"`), so a
name Terraform misspells, or one a service renamed, would be dropped silently and the service
would run on its local default; and a production check (a placeholder pepper, the local seal
key, a routed SMS gateway without its key) would stop a task only once it is deployed. These
tests build each task's environment from the Terraform files and start the service's settings
on it."""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from auth.settings import AuthSettings
from billing.settings import BillingSettings
from chat.settings import ChatSettings
from cryptography.fernet import Fernet
from media.settings import MediaSettings
from messaging.settings import MessagingSettings
from provider_sync.settings import ProviderSyncSettings

ROOT = Path(__file__).resolve().parents[1]
TF = ROOT / "infra" / "terraform"
SETTINGS = {
    "auth": AuthSettings,
    "messaging": MessagingSettings,
    "chat": ChatSettings,
    "media": MediaSettings,
    "billing": BillingSettings,
    "provider-sync": ProviderSyncSettings,
}
SB_NAME = re.compile(r"\b(SB_[A-Z0-9_]+)\b")
GATEWAY_ROUTES = {"*": ["gateway", "sns"]}


@functools.cache
def load(name: str) -> dict[str, Any]:
    with (TF / name).open() as f:
        return hcl2.load(f)


def unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals' quotes (and map keys'): without them, recursively."""
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value[1:-1] if isinstance(value, str) and value.startswith('"') and value.endswith('"') else value


def ecs_locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in load("ecs.tf")["locals"]:
        merged.update(block)
    return merged


def variable_default(name: str) -> Any:
    for block in load("variables.tf")["variable"]:
        if name in block or f'"{name}"' in block:
            return unquote((block.get(name) or block[f'"{name}"'])["default"])
    raise KeyError(name)


def task_names(service: str, *, gateway: bool) -> dict[str, str]:
    """The SB_ names a service's tasks get, each with where it comes from: `env:<expression>` or
    `secret`. `gateway`: as deployed with sms_routes naming the HTTP SMS gateway."""
    loc = ecs_locals()
    names = {key: f"env:{unquote(value)}" for key, value in loc["common_environment"].items()}
    extra = {unquote(k): v for k, v in loc["extra_environment"].items()}.get(service)
    if isinstance(extra, dict):
        names.update({key: f"env:{unquote(value)}" for key, value in extra.items()})
    elif isinstance(extra, str):  # merge(...) with a conditional part
        for part in re.split(r"(?=local\.sms_gateway_routed \?)", extra):
            if part.startswith("local.sms_gateway_routed") and not gateway:
                continue
            names.update({key: "env:" for key in SB_NAME.findall(part)})
    # service_secrets: concat([always], <condition> ? [...] : [], ...)
    expr = loc["service_secrets"]
    condition = re.compile(r'(name == "[\w-]+"(?: && local\.sms_gateway_routed)?|contains\(\[[^\]]*\], name\)) \?')
    pieces = condition.split(expr)
    for name in SB_NAME.findall(pieces[0]):
        names[name] = "secret"
    for cond, body in zip(pieces[1::2], pieces[2::2], strict=True):
        applies = re.findall(r'"([\w-]+)"', cond)
        if service not in applies or ("sms_gateway_routed" in cond and not gateway):
            continue
        for name in re.findall(r'name = "(SB_[A-Z0-9_]+)"', body):
            names[name] = "secret"
    return names


def field(name: str) -> str:
    return name.removeprefix("SB_").lower()


def value_for(service: str, name: str, source: str, *, gateway: bool) -> str:
    """A value of the shape the deployment gives (never a local placeholder)."""
    literal = source.removeprefix("env:")
    if source.startswith("env:") and literal and "${" not in literal:
        return literal
    pkg = unquote(ecs_locals()["services"][service]["pkg"])
    made = {
        "SB_DATABASE_URL": f"postgresql+asyncpg://{pkg}:{secrets.token_hex(16)}@db.internal:5432/switchboard?ssl=require",
        "SB_REDIS_URL": f"rediss://:{secrets.token_hex(16)}@redis.internal:6379/0",
        "SB_KAFKA_BOOTSTRAP": "b-1.msk.internal:9094,b-2.msk.internal:9094",
        "SB_MEDIA_BUCKET": "switchboard-production-media",
        "SB_SMS_ROUTES": json.dumps(GATEWAY_ROUTES if gateway else variable_default("sms_routes")),
        "SB_SMS_GATEWAY_BASE_URL": "https://sms-gateway.example",
        "SB_OTP_SEAL_KEYS": json.dumps([Fernet.generate_key().decode()]),
    }
    if name in made:
        return made[name]
    annotation = SETTINGS[service].model_fields[field(name)].annotation
    if annotation is not None and getattr(annotation, "__origin__", None) is list:
        return json.dumps([secrets.token_urlsafe(24)])
    return secrets.token_urlsafe(32)


def without_sb_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of the test process's own SB_ settings leaks into the settings built."""
    for key in list(os.environ):
        if key.startswith("SB_"):
            monkeypatch.delenv(key)


def deployed(monkeypatch: pytest.MonkeyPatch, service: str, *, gateway: bool = False, drop: str = "") -> Any:
    without_sb_environment(monkeypatch)
    for name, source in task_names(service, gateway=gateway).items():
        if name != drop:
            monkeypatch.setenv(name, value_for(service, name, source, gateway=gateway))
    return SETTINGS[service]()


def test_every_service_is_deployed_under_its_own_package():
    services = {unquote(k): v for k, v in ecs_locals()["services"].items()}
    folders = {p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists()}
    assert set(services) == folders == set(SETTINGS)
    for name, spec in services.items():
        assert unquote(spec["pkg"]) == name.replace("-", "_")
        assert (ROOT / "services" / name / "src" / unquote(spec["pkg"])).is_dir()


@pytest.mark.parametrize("service", sorted(SETTINGS))
@pytest.mark.parametrize("gateway", [False, True])
def test_every_name_terraform_gives_a_service_is_one_of_its_settings(service, gateway):
    names = task_names(service, gateway=gateway)
    assert {"SB_ENVIRONMENT", "SB_DATABASE_URL", "SB_REDIS_URL", "SB_KAFKA_BOOTSTRAP"} <= set(names)
    unknown = sorted(n for n in names if field(n) not in SETTINGS[service].model_fields)
    assert unknown == [], f"{service} ignores {unknown}"


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_each_service_starts_on_the_environment_its_tasks_get(monkeypatch, service):
    settings = deployed(monkeypatch, service)
    assert settings.environment == "production"
    assert settings.database_url.endswith("?ssl=require") and settings.redis_url.startswith("rediss://")


def test_messaging_starts_when_sms_go_through_the_http_gateway_and_not_without_its_secrets(monkeypatch):
    settings = deployed(monkeypatch, "messaging", gateway=True)
    assert "gateway" in settings.sms_routes["*"] and settings.sms_gateway_base_url.startswith("https://")
    assert settings.sms_gateway_api_key and settings.sms_gateway_webhook_secrets
    # Each of them is needed: without one, messaging refuses to start (as a task would).
    for name in ("SB_SMS_GATEWAY_API_KEY", "SB_SMS_GATEWAY_WEBHOOK_SECRETS", "SB_SMS_GATEWAY_BASE_URL"):
        with pytest.raises(ValueError):
            deployed(monkeypatch, "messaging", gateway=True, drop=name)
    # Without the gateway routed, its secrets are not given at all (ECS would not start a task
    # whose secret has no value yet).
    assert not {"SB_SMS_GATEWAY_API_KEY", "SB_SMS_GATEWAY_BASE_URL"} & set(task_names("messaging", gateway=False))


def test_the_production_secrets_are_given_where_they_are_checked(monkeypatch):
    # The peppers and the seal keys: a service started without them refuses (their local
    # defaults are placeholders), so Terraform must give them.
    for service, name in [
        ("auth", "SB_OTP_PEPPER"), ("auth", "SB_OTP_SEAL_KEYS"),
        ("messaging", "SB_SMS_NUMBER_CODE_PEPPER"), ("messaging", "SB_OTP_SEAL_KEYS"),
    ]:
        assert task_names(service, gateway=False)[name] == "secret"
        with pytest.raises(ValueError):
            deployed(monkeypatch, service, drop=name)


def test_secrets_are_readable_by_the_tasks_and_listed_to_fill():
    ecs = (TF / "ecs.tf").read_text()
    policy = ecs[ecs.index('data "aws_iam_policy_document" "execution_secrets"'):]
    policy = policy[: policy.index("\n}\n")]
    outputs = (TF / "outputs.tf").read_text()
    for block in load("secrets.tf")["resource"]:
        for kind, resources in block.items():
            if unquote(kind) != "aws_secretsmanager_secret":
                continue
            for name in resources:
                name = unquote(name)
                assert f"aws_secretsmanager_secret.{name}" in policy, f"the tasks cannot read {name}"
                if name not in ("db", "redis"):  # generated by Terraform; the rest is filled by hand
                    assert f"aws_secretsmanager_secret.{name}" in outputs, f"{name} is not in secrets_to_fill"


def test_the_compose_file_gives_each_service_only_settings_it_reads(monkeypatch):
    """The same check for docker-compose.yml (SB_ENVIRONMENT local there): every SB_ name a
    container gets is one of its service's settings, and the settings start on them."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    checked = set()
    for name, spec in compose.items():
        service = name.removesuffix("-worker")
        if service not in SETTINGS:
            continue
        env = spec.get("environment") or {}
        names = {k: str(v) for k, v in env.items() if k.startswith("SB_")}
        unknown = sorted(n for n in names if field(n) not in SETTINGS[service].model_fields)
        assert unknown == [], f"{name} ignores {unknown}"
        without_sb_environment(monkeypatch)
        for key, value in names.items():
            # As compose interpolates it with nothing set in the shell: `${X:-default}` is the default.
            value = re.sub(r"\$\{\w+:-([^}]*)\}", lambda m: m.group(1), value)
            monkeypatch.setenv(key, value.replace("$$", "$"))
        assert SETTINGS[service]().environment == "local"
        checked.add(name)
    assert checked == set(SETTINGS) | {f"{s}-worker" for s in SETTINGS}
