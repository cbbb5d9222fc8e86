from billing.models import Base
from billing.settings import BillingSettings
from common.db.migrations import run_migrations

run_migrations(Base.metadata, BillingSettings())
