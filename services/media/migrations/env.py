from common.db.migrations import run_migrations
from media.models import Base
from media.settings import MediaSettings

run_migrations(Base.metadata, MediaSettings())
