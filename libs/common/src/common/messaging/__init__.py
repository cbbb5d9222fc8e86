"""The event backbone: transactional outbox, relay, consumer runner with inbox, DLQ.

The only package allowed to import aiokafka (checked by the architecture lint).
"""

from common.messaging.outbox import emit

__all__ = ["emit"]
