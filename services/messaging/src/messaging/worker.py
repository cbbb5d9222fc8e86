"""messaging worker process: the outbox relay and the consumer of stored provider webhooks."""

from common.messaging.worker import run_worker

from messaging.inbound.handlers import webhook_consumer
from messaging.settings import MessagingSettings


def main() -> None:
    settings = MessagingSettings()
    run_worker(settings, lambda sessions: [webhook_consumer(settings, sessions)])


if __name__ == "__main__":
    main()
