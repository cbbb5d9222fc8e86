"""Billing worker process: outbox relay + consumers. `python -m billing.worker`."""

from common.messaging.consumer import EventConsumer
from common.messaging.worker import run_worker

from billing.accounts.handlers import make_handlers
from billing.settings import BillingSettings


def main() -> None:
    settings = BillingSettings()
    run_worker(
        settings,
        lambda sessions: [
            EventConsumer(settings, sessions, "billing", make_handlers(settings.default_currency))
        ],
    )


if __name__ == "__main__":
    main()
