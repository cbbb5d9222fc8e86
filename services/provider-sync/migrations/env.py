from provider_sync.models import Base
from provider_sync.settings import ProviderSyncSettings

from common.db.migrations import run_migrations

run_migrations(Base.metadata, ProviderSyncSettings())
