from media.models import Base
from media.settings import MediaSettings

from common.db.migrations import run_migrations

run_migrations(Base.metadata, MediaSettings())
