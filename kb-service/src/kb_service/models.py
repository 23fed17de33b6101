"""KB's tables. So far: FAQ candidates promoted from approved answers."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, String, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from helpdesk_shared.chassis.db import service_metadata


class Base(DeclarativeBase):
    metadata = service_metadata()


class FaqCandidate(Base):
    """An approved answer that a KB editor may turn into an FAQ article."""

    __tablename__ = "faq_candidates"

    answer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    answer_version: Mapped[int]
    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    domain: Mapped[str | None] = mapped_column(String(100))
    question: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="new")
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


metadata = Base.metadata
