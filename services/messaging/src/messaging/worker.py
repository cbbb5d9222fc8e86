"""messaging worker process: the outbox relay, the consumers of billing's answers and of auth's
OTP requests, and the SMS dispatcher. `python -m messaging.worker`."""

from common.messaging.worker import run_worker

from messaging.dispatch.dispatcher import Dispatcher
from messaging.dispatch.handlers import billing_consumer, otp_consumer
from messaging.inbound.handlers import webhook_consumer
from messaging.settings import MessagingSettings


def main() -> None:
    settings = MessagingSettings()

    def runners(sessions):  # noqa: ANN001, ANN202
        dispatcher = Dispatcher(settings, sessions)
        return [
            billing_consumer(settings, sessions, dispatcher.wake),
            otp_consumer(settings, sessions, dispatcher.wake),
            webhook_consumer(settings, sessions),
            dispatcher,
        ]

    run_worker(settings, runners)


if __name__ == "__main__":
    main()
