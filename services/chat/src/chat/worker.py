"""chat worker process: the outbox relay (consumers arrive with the service's features)."""

from common.messaging.worker import run_worker

from chat.settings import ChatSettings


def main() -> None:
    run_worker(ChatSettings())


if __name__ == "__main__":
    main()
