"""messaging's tables, all in the `messaging` schema."""

import uuid
from datetime import datetime

from common.db import make_base
from sqlalchemy import CheckConstraint, DateTime, Index, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

Base = make_base("messaging")


class Contact(Base):
    """A tenant's address book entry (issue 5, seeds 000 and 002). One per phone per tenant."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "phone", name="uq_contacts_tenant_id_phone"),
        # Newest-first listing and the export's keyset walk, both within one tenant.
        Index("ix_contacts_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
        CheckConstraint("cardinality(tags) <= 20", name="tags_count"),
    )

    # UUIDv7 (time-ordered), made by the service: ties on created_at (one import) keep file order.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID]
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(254))
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default="{}")
    notes: Mapped[str | None] = mapped_column(String(1000))
    # The CSV import that last created or updated the contact: within one import, a phone it
    # has already written is a repetition in the file, not an update.
    last_import_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
