"""messaging's tables, all in the `messaging` schema."""

from common.db import make_base

Base = make_base("messaging")
