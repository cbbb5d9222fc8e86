"""Async SQLAlchemy 2 per service, bound to the service's own Postgres schema."""

from common.db.base import make_base
from common.db.engine import BATCH_SERVER_SETTINGS, create_engine, create_session_factory

__all__ = ["BATCH_SERVER_SETTINGS", "create_engine", "create_session_factory", "make_base"]
