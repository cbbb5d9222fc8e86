"""Billing worker process: outbox relay + consumers. `python -m billing.worker`."""

from common.messaging.consumer import EventConsumer
from common.messaging.worker import run_worker

from billing.accounts.handlers import make_handlers as account_handlers
from billing.holds.handlers import make_batch_handlers as hold_batch_handlers
from billing.holds.handlers import make_handlers as hold_handlers
from billing.pricing.handlers import make_handlers as pricing_handlers
from billing.settings import BillingSettings


def main() -> None:
    settings = BillingSettings()
    run_worker(
        settings,
        lambda sessions: [
            EventConsumer(settings, sessions, "billing", account_handlers(settings.default_currency)),
            EventConsumer(
                settings, sessions, "billing-holds", hold_handlers(settings),
                batch_handlers=hold_batch_handlers(settings),
            ),
            EventConsumer(settings, sessions, "billing-pricing", pricing_handlers(settings)),
        ],
    )


if __name__ == "__main__":
    main()
