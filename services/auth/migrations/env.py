from auth.models import Base
from auth.settings import AuthSettings
from common.db.migrations import run_migrations

run_migrations(Base.metadata, AuthSettings())
