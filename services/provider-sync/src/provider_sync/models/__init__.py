"""provider-sync's tables, all in the `provider_sync` schema."""

from common.db import make_base

Base = make_base("provider_sync")
