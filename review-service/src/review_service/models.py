"""Review's tables. So far: who currently owns each ticket (who may draft its answer)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from helpdesk_shared.chassis.db import service_metadata


class Base(DeclarativeBase):
    metadata = service_metadata()


class TicketOwner(Base):
    """Mirror of routing's assignment: the agent allowed to draft the ticket's answer."""

    __tablename__ = "ticket_owners"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


metadata = Base.metadata
