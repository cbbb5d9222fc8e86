"""Auth worker process: the outbox relay (consumers arrive with OTP delivery status)."""

from auth.settings import AuthSettings
from common.messaging.worker import run_worker


def main() -> None:
    run_worker(AuthSettings())


if __name__ == "__main__":
    main()
