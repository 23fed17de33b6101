"""Choosing an assignee: the pure part of the decision.

The candidates come from the database already filtered to online agents with
free capacity; the database re-checks capacity atomically when the choice is
applied, so two replicas can never push one agent over capacity.

The order is by skill first — the ticket's domain *and* language, then its domain, then
anyone — and within each tier by load, so the least-loaded agent of the best tier is tried
first. Skill levels only break ties between equally loaded agents: preferring the expert
over load would pile every ticket of a domain onto its best specialist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

# Leads take difficult tickets (and what they are given explicitly); agents who are both
# lead and specialist also take ordinary ones.
SPECIALIST_ROLES = frozenset({"specialist"})

MIN_SKILL_LEVEL, MAX_SKILL_LEVEL = 1, 5
DEFAULT_SKILL_LEVEL = 3
"""The level of a domain an agent holds without a level given."""

Match = Literal["domain+language", "domain", "any"]


@dataclass(frozen=True, slots=True)
class Candidate:
    agent_id: uuid.UUID
    active_tickets: int
    max_concurrent: int
    last_assigned_at: datetime | None
    skills: Mapping[str, int] = field(default_factory=dict, hash=False)
    """Domain → level (1–5) of every domain the agent holds."""
    languages: frozenset[str] = frozenset()
    team_id: uuid.UUID | None = None
    """The agent's team — for a lead who is not a member of one, the team they lead."""

    def level(self, domain: str | None) -> int:
        """The agent's level in `domain`, 0 when they do not hold it."""
        return self.skills.get(domain, 0) if domain is not None else 0

    def speaks(self, language: str | None) -> bool:
        return language is not None and any(same_language(own, language) for own in self.languages)


def effective_levels(domains: Iterable[str], levels: Mapping[str, int]) -> dict[str, int]:
    """Every held domain with its level: the given one, else the default."""
    return {domain: int(levels.get(domain, DEFAULT_SKILL_LEVEL)) for domain in domains}


def primary_language(tag: str) -> str:
    """`zh-TW` → `zh`: BCP 47 tags are case-insensitive; `_` is a common misspelling of `-`."""
    return tag.replace("_", "-").split("-", 1)[0].strip().lower()


def same_language(spoken: str, wanted: str) -> bool:
    """Languages match on their primary subtag: an agent who speaks `zh` reads zh-TW and zh-CN.

    Finer distinctions (script, region) are not worth a worse match: the text is normalised
    between Traditional and Simplified Chinese everywhere in the system.
    """
    return primary_language(spoken) == primary_language(wanted)


def _rank_key(domain: str | None) -> Callable[[Candidate], tuple[float, int, float]]:
    def key(c: Candidate) -> tuple[float, int, float]:
        waited = c.last_assigned_at.timestamp() if c.last_assigned_at else float("-inf")
        return (c.active_tickets / max(c.max_concurrent, 1), -c.level(domain), waited)

    return key


def rank_candidates(candidates: Iterable[Candidate], domain: str | None = None) -> list[Candidate]:
    """Least loaded first (by share of capacity), then the higher level in `domain`, then
    whoever waited longest (round robin)."""
    return sorted((c for c in candidates if c.active_tickets < c.max_concurrent), key=_rank_key(domain))


def best_candidate(
    candidates: Iterable[Candidate], *, domain: str | None, language: str | None
) -> tuple[Candidate, Match] | None:
    """The first of `order_candidates` (None if nobody has a free slot), in one pass per tier
    instead of sorting them all: what a run of new tickets asks for each ticket."""
    free = [c for c in candidates if c.active_tickets < c.max_concurrent]
    key = _rank_key(domain)
    if domain is not None:
        skilled = [c for c in free if c.level(domain) > 0]
        if language is not None and (speaking := [c for c in skilled if c.speaks(language)]):
            return min(speaking, key=key), "domain+language"
        if skilled:
            return min(skilled, key=key), "domain"
    return (min(free, key=key), "any") if free else None


def order_candidates(
    candidates: Iterable[Candidate], *, domain: str | None, language: str | None
) -> list[tuple[Candidate, Match]]:
    """Who to try, in order, each once: domain and language, then domain, then anyone."""
    pool = list(candidates)
    tiers: list[tuple[Match, list[Candidate]]] = []
    if domain is not None:
        skilled = [c for c in pool if c.level(domain) > 0]
        if language is not None:
            tiers.append(("domain+language", [c for c in skilled if c.speaks(language)]))
        tiers.append(("domain", skilled))
    tiers.append(("any", pool))
    ordered: list[tuple[Candidate, Match]] = []
    seen: set[uuid.UUID] = set()
    for match, tier in tiers:
        for candidate in rank_candidates(tier, domain):
            if candidate.agent_id not in seen:
                seen.add(candidate.agent_id)
                ordered.append((candidate, match))
    return ordered
