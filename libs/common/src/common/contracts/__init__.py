"""Event contracts: the envelope, the registry, one module per producing service and version."""

from common.contracts.envelope import EventEnvelope, dlq_topic, split_type, topic_for
from common.contracts.registry import all_topics, all_types, event, model_for, type_of

__all__ = [
    "EventEnvelope",
    "all_topics",
    "all_types",
    "dlq_topic",
    "event",
    "model_for",
    "split_type",
    "topic_for",
    "type_of",
]
