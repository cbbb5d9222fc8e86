"""The event envelope: CloudEvents 1.0 in structured JSON mode, one JSON object per Kafka record.

Attributes: specversion, id, source, type (versioned: `auth.user.registered.v1`), time, subject
(the aggregate id, also the Kafka key), datacontenttype, plus the extensions `tenantid`,
`traceparent` (W3C) and `requestid`. `data` holds the typed payload.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

P = TypeVar("P", bound=BaseModel)

TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*\.[a-z][a-z0-9_]*\.v[1-9][0-9]*$")


class EventEnvelope(BaseModel, Generic[P]):
    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=256)
    type: str = Field(pattern=TYPE_RE.pattern, max_length=128)
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str = Field(min_length=1, max_length=256)
    datacontenttype: str = "application/json"
    tenantid: str | None = Field(default=None, max_length=64)
    traceparent: str | None = Field(default=None, max_length=128)
    requestid: str | None = Field(default=None, max_length=128)
    data: P


def split_type(event_type: str) -> tuple[str, int]:
    """`auth.user.registered.v1` -> (`auth.user.registered`, 1)."""
    base, _, version = event_type.rpartition(".v")
    return base, int(version)


def topic_for(event_type: str) -> str:
    """Topic = event family: `auth.user.registered.v1` -> `auth.user`."""
    producer, aggregate, *_ = event_type.split(".")
    return f"{producer}.{aggregate}"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"
