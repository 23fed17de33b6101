"""Review's tables. So far: who may draft each ticket's answers — its owner and its collaborators."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from helpdesk_shared.chassis.db import service_metadata


class Base(DeclarativeBase):
    metadata = service_metadata()


class TicketOwner(Base):
    """Mirror of routing's assignment: the agent allowed to draft the ticket's answer.

    Follows `ticket.assigned`, `ticket.transferred` and `ticket.queued`, the newest by
    ``assigned_at`` winning. A ticket handed back to the queue keeps its row with no agent (so an
    older assignment arriving late cannot bring its previous owner back)."""

    __tablename__ = "ticket_owners"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    agent_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    """None: nobody holds the ticket (it is queued)."""
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the ticket went to ``agent_id`` (assigned or transferred), or back to the queue."""


class TicketCollaborators(Base):
    """Mirror of routing's collaborators of a ticket: agents besides the owner who may draft its
    answers. One row per ticket holding the whole list of the latest `ticket.collaborators_changed`
    (an emptied list keeps its row, so an older event arriving late cannot bring names back)."""

    __tablename__ = "ticket_collaborators"

    ticket_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    agent_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


metadata = Base.metadata
