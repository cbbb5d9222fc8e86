"""Settings from the environment: one class per service, built on BaseServiceSettings."""

from __future__ import annotations

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Local-stack defaults (scripts/devstack.py starts everything on these ports), so a service
# started by hand next to `make dev` needs no environment at all.
LOCAL_PG = "127.0.0.1:55432"
LOCAL_DB = "switchboard"
LOCAL_REDIS = "redis://127.0.0.1:56379/0"
LOCAL_KAFKA = "127.0.0.1:59092"
LOCAL_AUTH = "http://127.0.0.1:8101"

_PLACEHOLDERS = {"changeme", "change-me", "secret", "dev", "test", ""}


class BaseServiceSettings(BaseSettings):
    """Common settings; read from `SB_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SB_", extra="ignore")

    service_name: str = "service"
    environment: str = "local"  # local | test | production
    http_port: int = 8000
    worker_metrics_port: int = 0  # 0: the worker exposes no /metrics of its own

    database_url: str = ""  # default derived from service_name below
    db_schema: str = ""
    db_pool_size: int = 10

    redis_url: str = LOCAL_REDIS

    kafka_bootstrap: str = LOCAL_KAFKA
    kafka_session_timeout_ms: int = 10_000
    kafka_request_timeout_ms: int = 30_000

    outbox_batch_size: int = 500
    outbox_poll_interval_s: float = 1.0
    consumer_max_retries: int = 3
    consumer_backoff_s: float = 0.2

    jwks_url: str = f"{LOCAL_AUTH}/.well-known/jwks.json"
    jwt_issuer: str = "switchboard-auth"
    jwt_audience: str = "switchboard"

    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _derive(self) -> BaseServiceSettings:
        role = self.service_name.replace("-", "_")
        if not self.db_schema:
            self.db_schema = role
        if not self.database_url:
            self.database_url = f"postgresql+asyncpg://{role}:{role}@{LOCAL_PG}/{LOCAL_DB}"
        if self.environment == "production":
            from sqlalchemy.engine import make_url

            password = make_url(self.database_url).password or ""
            if password in _PLACEHOLDERS or password == role:
                raise ValueError("production settings use a placeholder database password")
        return self

    @property
    def asyncpg_dsn(self) -> str:
        """The database URL in the form asyncpg itself accepts (no SQLAlchemy driver suffix)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
