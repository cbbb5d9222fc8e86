"""provider-sync worker process: the outbox relay (consumers arrive with the service's features)."""

from common.messaging.worker import run_worker

from provider_sync.settings import ProviderSyncSettings


def main() -> None:
    run_worker(ProviderSyncSettings())


if __name__ == "__main__":
    main()
