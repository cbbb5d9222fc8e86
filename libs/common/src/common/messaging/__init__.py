"""The event backbone: transactional outbox, relay, consumer runner with inbox, DLQ.

The only package allowed to import aiokafka (checked by the architecture lint).
"""

from common.messaging.outbox import emit, emit_many

__all__ = ["emit", "emit_many"]
