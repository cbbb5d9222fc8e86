"""media's tables, all in the `media` schema."""

from common.db import make_base

Base = make_base("media")
