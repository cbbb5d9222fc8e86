from common.db.migrations import run_migrations
from provider_sync.models import Base
from provider_sync.settings import ProviderSyncSettings

run_migrations(Base.metadata, ProviderSyncSettings())
