"""Declarative base per service: its own MetaData, schema and constraint naming convention."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_base(schema: str) -> type[DeclarativeBase]:
    """A DeclarativeBase whose tables live in `schema`, with the outbox/inbox tables included."""
    from common.messaging.tables import add_backbone_tables

    metadata = MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
    add_backbone_tables(metadata)

    class Base(DeclarativeBase):
        pass

    Base.metadata = metadata
    Base.registry.metadata = metadata
    return Base
