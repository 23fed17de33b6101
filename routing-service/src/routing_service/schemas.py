"""Request and response bodies of the routing API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from helpdesk_shared.contracts.enums import AgentPresence

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Domain = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Language = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=35)]
AgentRole = Literal["specialist", "reviewer", "lead"]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    lead_id: uuid.UUID | None = None


class TeamOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    lead_id: uuid.UUID | None
    created_at: datetime


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = Field(default=None, description="Reuse the identity provider's user id")
    name: Name
    team_id: uuid.UUID | None = None
    roles: list[AgentRole] = Field(min_length=1, max_length=3)
    domains: list[Domain] = Field(default_factory=list, max_length=50)
    languages: list[Language] = Field(default_factory=lambda: ["zh"], max_length=10)
    max_concurrent: int = Field(default=5, ge=0, le=200)
    presence: AgentPresence = AgentPresence.ONLINE


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    team_id: uuid.UUID | None
    roles: list[str]
    domains: list[str]
    languages: list[str]
    max_concurrent: int
    active_tickets: int
    presence: AgentPresence
    created_at: datetime
