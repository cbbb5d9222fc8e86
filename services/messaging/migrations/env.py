from messaging.models import Base
from messaging.settings import MessagingSettings

from common.db.migrations import run_migrations

run_migrations(Base.metadata, MessagingSettings())
