"""Auth worker process: the outbox relay (consumers arrive with OTP delivery status)."""

from common.messaging.worker import run_worker

from auth.settings import AuthSettings


def main() -> None:
    run_worker(AuthSettings())


if __name__ == "__main__":
    main()
