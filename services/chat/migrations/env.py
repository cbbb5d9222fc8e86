from chat.models import Base
from chat.settings import ChatSettings
from common.db.migrations import run_migrations

run_migrations(Base.metadata, ChatSettings())
