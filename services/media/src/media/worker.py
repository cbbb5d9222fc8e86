"""media worker process: the outbox relay (consumers arrive with the service's features)."""

from common.messaging.worker import run_worker

from media.settings import MediaSettings


def main() -> None:
    run_worker(MediaSettings())


if __name__ == "__main__":
    main()
