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

import dataclasses
import heapq
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


_Rank = tuple[float, int, float]


def _rank_key(domain: str | None) -> Callable[[Candidate], _Rank]:
    def key(c: Candidate) -> _Rank:
        waited = c.last_assigned_at.timestamp() if c.last_assigned_at else float("-inf")
        return (c.active_tickets / max(c.max_concurrent, 1), -c.level(domain), waited)

    return key


def rank_candidates(candidates: Iterable[Candidate], domain: str | None = None) -> list[Candidate]:
    """Least loaded first (by share of capacity), then the higher level in `domain`, then
    whoever waited longest (round robin)."""
    return sorted((c for c in candidates if c.active_tickets < c.max_concurrent), key=_rank_key(domain))


_Tier = tuple[list[tuple[_Rank, int, Candidate]], Callable[[Candidate], _Rank]]
"""A heap of (rank, position in the snapshot, candidate) and the rank it is ordered by."""


class CandidatePool:
    """A run's snapshot of free specialists, asked for the best one ticket after ticket.

    `take` answers with the first of `order_candidates` over the snapshot as it stands, then counts
    the slot (the agent's load one higher, last assigned ``now``) before the next ticket asks.
    Each tier a ticket can ask for — a domain in a language, a domain, anyone — is a heap by rank
    built when first asked for; a choice only ever raises the chosen agent's rank, so an entry
    that reaches the top after its agent was chosen is simply pushed back with the new rank. A
    ticket thus costs a look at the top of a heap instead of a pass over every specialist.
    """

    def __init__(self, candidates: Iterable[Candidate]) -> None:
        # Agents keep their place in the snapshot when their candidate is replaced: equal ranks go
        # to the earlier agent, as in `order_candidates`' stable sort.
        self._current = {c.agent_id: c for c in candidates}
        self._tiers: dict[tuple[str | None, str | None], _Tier] = {}
        self._spoken: dict[frozenset[str], frozenset[str]] = {}

    def take(
        self, *, domain: str | None, language: str | None, now: datetime
    ) -> tuple[Candidate, Match] | None:
        """The best free candidate for a ticket (as the snapshot stood) and its match, or None."""
        if domain is not None:
            if language is not None and (best := self._best(domain, primary_language(language))):
                return self._chosen(best, now), "domain+language"
            if best := self._best(domain, None):
                return self._chosen(best, now), "domain"
        # Nobody free holds the domain: everybody free ranks as for no domain (level 0 each).
        return (self._chosen(best, now), "any") if (best := self._best(None, None)) else None

    def _best(self, domain: str | None, language: str | None) -> Candidate | None:
        tier = self._tiers.get((domain, language))
        if tier is None:
            tier = self._tiers[domain, language] = self._tier(domain, language)
        heap, rank = tier
        while heap:
            _, position, candidate = heap[0]
            current = self._current[candidate.agent_id]
            if current is candidate:
                return candidate
            if current.active_tickets < current.max_concurrent:  # chosen meanwhile: ranks lower now
                heapq.heapreplace(heap, (rank(current), position, current))
            else:
                heapq.heappop(heap)
        return None

    def _tier(self, domain: str | None, language: str | None) -> _Tier:
        rank = _rank_key(domain)
        heap = [
            (rank(c), position, c)
            for position, c in enumerate(self._current.values())
            if c.active_tickets < c.max_concurrent
            and (domain is None or c.skills.get(domain, 0) > 0)  # `level`, without a call per agent
            and (language is None or language in self._primaries(c.languages))
        ]
        heapq.heapify(heap)
        return heap, rank

    def _primaries(self, languages: frozenset[str]) -> frozenset[str]:
        """The primary subtags of a set of languages (`Candidate.speaks` for each agent and tier
        was most of a tier's cost; the specialists share a handful of language sets)."""
        primaries = self._spoken.get(languages)
        if primaries is None:
            primaries = self._spoken[languages] = frozenset(primary_language(own) for own in languages)
        return primaries

    def _chosen(self, candidate: Candidate, now: datetime) -> Candidate:
        self._current[candidate.agent_id] = dataclasses.replace(
            candidate, active_tickets=candidate.active_tickets + 1, last_assigned_at=now
        )
        return candidate


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
