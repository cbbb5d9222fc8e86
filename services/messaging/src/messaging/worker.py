"""messaging worker process: the outbox relay (consumers arrive with the service's features)."""

from common.messaging.worker import run_worker

from messaging.settings import MessagingSettings


def main() -> None:
    run_worker(MessagingSettings())


if __name__ == "__main__":
    main()
