from common.db.migrations import run_migrations
from messaging.models import Base
from messaging.settings import MessagingSettings

run_migrations(Base.metadata, MessagingSettings())
