"""chat's tables, all in the `chat` schema."""

from common.db import make_base

Base = make_base("chat")
