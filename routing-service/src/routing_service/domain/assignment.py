"""Choosing an assignee: the pure part of the decision.

The candidates come from the database already filtered to online agents with
free capacity; the database re-checks capacity atomically when the choice is
applied, so two replicas can never push one agent over capacity.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

# Leads take difficult tickets (and what they are given explicitly); agents who are both
# lead and specialist also take ordinary ones.
SPECIALIST_ROLES = frozenset({"specialist"})


@dataclass(frozen=True, slots=True)
class Candidate:
    agent_id: uuid.UUID
    active_tickets: int
    max_concurrent: int
    last_assigned_at: datetime | None


def rank_candidates(candidates: list[Candidate]) -> list[Candidate]:
    """Least loaded first (by share of capacity), then whoever waited longest (round robin)."""

    def key(c: Candidate) -> tuple[float, float]:
        waited = c.last_assigned_at.timestamp() if c.last_assigned_at else float("-inf")
        return (c.active_tickets / max(c.max_concurrent, 1), waited)

    return sorted((c for c in candidates if c.active_tickets < c.max_concurrent), key=key)
