"""The one factory for every Kafka producer, consumer and admin client.

aiokafka's defaults (acks=1, no idempotence, auto-commit) lose or duplicate events; nothing in
the platform builds a client any other way (the architecture lint forbids importing aiokafka
outside this package).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from common.contracts.envelope import dlq_topic
from common.settings import BaseServiceSettings

log = logging.getLogger("common.kafka")


def producer_config(settings: BaseServiceSettings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.service_name}-producer",
        "enable_idempotence": True,
        "acks": "all",
        # No linger: the relay appends a whole batch without yielding, so its records are
        # batched anyway; a linger would only delay every batch's acknowledgement.
        "linger_ms": 0,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "retry_backoff_ms": 200,
    }


def consumer_config(settings: BaseServiceSettings, group_id: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.service_name}-{group_id}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(1000, settings.kafka_session_timeout_ms // 3),
        "max_poll_records": 500,
        "request_timeout_ms": max(settings.kafka_request_timeout_ms, 40_000),
        "retry_backoff_ms": 200,
    }


def make_producer(settings: BaseServiceSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**producer_config(settings))


def make_consumer(settings: BaseServiceSettings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **consumer_config(settings, group_id))


def make_admin(settings: BaseServiceSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.service_name}-admin",
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )


async def ensure_topics(
    settings: BaseServiceSettings, topics: list[str], partitions: int = 3, with_dlq: bool = True
) -> list[str]:
    """Create the topics (and their `.dlq`) that are missing; returns those it created."""
    wanted = set(topics) | ({dlq_topic(t) for t in topics} if with_dlq else set())
    admin = make_admin(settings)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = sorted(wanted - existing)
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()


async def delete_topics(settings: BaseServiceSettings, topics: list[str]) -> None:
    """Delete topics and their DLQs (tests clean up the scratch topics they made)."""
    admin = make_admin(settings)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        doomed = [t for t in {*topics, *(dlq_topic(t) for t in topics)} if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


class KafkaProbe:
    """A cheap readiness check: one long-lived admin client asks the broker for its metadata."""

    def __init__(self, settings: BaseServiceSettings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None

    async def check(self, timeout: float = 2.0) -> None:
        try:
            if self._admin is None:
                # Held before it has started, so a start that fails (every probe while the
                # broker is down) is closed below instead of leaking its connections.
                self._admin = make_admin(self._settings)
                await asyncio.wait_for(self._admin.start(), timeout)
            await asyncio.wait_for(self._admin.describe_cluster(), timeout)
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            try:
                await admin.close()
            except Exception:  # noqa: BLE001 - closing a broken client may fail; nothing to do
                pass
