"""Data access for routing. Repositories flush, never commit."""

from __future__ import annotations

import collections
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Integer, Row, delete, exists, func, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk_shared.chassis.consumer import InboxClaim
from helpdesk_shared.chassis.db import driver_connection
from helpdesk_shared.chassis.pagination import PageParams, keyset_page
from helpdesk_shared.contracts.enums import AgentPresence, Priority, SlaTarget
from routing_service.domain.assignment import (
    DEFAULT_SKILL_LEVEL,
    SPECIALIST_ROLES,
    Candidate,
    effective_levels,
)
from routing_service.models import (
    Agent,
    Assignment,
    QueueEntry,
    RoutedTicket,
    SlaTimer,
    Team,
    TicketCollaborator,
)

LED_TEAM = (
    select(Team.id)
    .where(Team.lead_id == Agent.id)
    .order_by(Team.created_at, Team.id)
    .limit(1)
    .correlate(Agent)
    .scalar_subquery()
)
_TEAM = func.coalesce(Agent.team_id, LED_TEAM).label("team_id")
"""The agent's team; for a lead who is no team's member, the (oldest) team they lead."""

_CANDIDATE_COLUMNS = (
    Agent.id,
    Agent.active_tickets,
    Agent.max_concurrent,
    Agent.last_assigned_at,
    Agent.domains,
    Agent.skill_levels,
    Agent.languages,
    _TEAM,
)


def _candidate(row: Mapping[Any, Any]) -> Candidate:
    """A candidate from the columns of `_CANDIDATE_COLUMNS` (an ORM row's ``_mapping``)."""
    return _built_candidate(
        row, row["last_assigned_at"], row["domains"], row["skill_levels"], row["languages"]
    )


def _built_candidate(
    row: Mapping[str, Any],
    last_assigned_at: datetime | None,
    domains: list[str],
    levels: dict[str, int] | None,
    languages: list[str],
) -> Candidate:
    """A candidate from a row's id, load, capacity and team, when it was last assigned, and its
    domains (each held one with its level) and languages."""
    return Candidate(
        row["id"],
        row["active_tickets"],
        row["max_concurrent"],
        last_assigned_at,
        skills=effective_levels(domains, levels or {}),
        languages=frozenset(languages),
        team_id=row["team_id"],
    )


# The candidates of recent snapshots by everything they are built from: between two runs most
# specialists are unchanged, and building a candidate (skills, languages) for each of a few hundred
# specialists in every run was a tenth of routing's CPU at 500 tickets/s.
_SNAPSHOT_CANDIDATES: dict[tuple[Any, ...], Candidate] = {}
_SNAPSHOT_CANDIDATES_KEPT = 4096


def _snapshot_candidates(rows: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    """Candidates of `_available_specialists` rows (their skills etc. as one JSON `profile`, when
    they were last assigned as epoch seconds), an unchanged specialist's the very one of the
    previous snapshot (candidates are immutable)."""
    known = _SNAPSHOT_CANDIDATES
    if len(known) > _SNAPSHOT_CANDIDATES_KEPT:
        known.clear()
    snapshot = []
    for row in rows:
        key = (
            row["id"],
            row["active_tickets"],
            row["max_concurrent"],
            row["last_assigned_epoch"],
            row["profile"],
            row["team_id"],
        )
        candidate = known.get(key)
        if candidate is None:
            epoch = row["last_assigned_epoch"]
            last_assigned_at = datetime.fromtimestamp(epoch, UTC) if epoch is not None else None
            candidate = known[key] = _built_candidate(row, last_assigned_at, *orjson.loads(row["profile"]))
        snapshot.append(candidate)
    return snapshot


class Lead(NamedTuple):
    """A team lead as a candidate, whatever their presence (capacity is checked when taken)."""

    candidate: Candidate
    online: bool


class Returned(NamedTuple):
    """A ticket taken back from an agent, with what the queue needs to place it."""

    ticket_id: uuid.UUID
    domain: str | None
    language: str | None
    waiting_since: datetime
    """When the customer's wait began (creation or reopening), not when it was handed back."""
    difficult: bool


class Released(NamedTuple):
    """An assignment just dropped (`RoutingRepository.drop_assignment`)."""

    agent_id: uuid.UUID
    touched_at: datetime | None
    """When the agent (or a collaborator) first worked on the ticket, if they did."""
    slot_freed: bool
    """The row held a slot, now given back (False: given back already, at its answer's delivery)."""


_QUEUE_ORDER = (QueueEntry.priority_rank.desc(), QueueEntry.waiting_since, QueueEntry.ticket_id)
"""The queue's order: priority, then the customer's wait (ties by id)."""


class NewRouting(NamedTuple):
    """A `routed_tickets` row of a ticket routed for the first time (see `remember`)."""

    ticket_id: uuid.UUID
    domain: str | None
    language: str | None
    text: str
    priority: Priority
    difficult: bool
    waiting_since: datetime


class RunStored(NamedTuple):
    """What `RoutingRepository.remember_assign_and_take` stored."""

    slots_taken: bool
    """Every chosen agent's slots taken (none filled up or went away meanwhile)."""
    remembered: int
    """Tickets remembered now (fewer than given: another delivery routed some meanwhile)."""
    clocks: int
    """Clocks started now (fewer than given: some existed, a replay from before `routed_tickets`)."""


class NewAssignment(NamedTuple):
    ticket_id: uuid.UUID
    agent_id: uuid.UUID
    reason: str
    domain: str | None
    language: str | None


# The batch statements (`routing_service.new_tickets`): plain SQL on the asyncpg connection of the
# unit of work (prepared once per connection, no ORM or compilation cost), one statement for a
# whole run of tickets, the rows passed as arrays.
_ROUTED_AMONG = (
    "SELECT ticket_id FROM routed_tickets WHERE ticket_id = ANY($1::uuid[]) "
    "UNION SELECT ticket_id FROM assignments WHERE ticket_id = ANY($1::uuid[]) "
    "UNION SELECT ticket_id FROM queue WHERE ticket_id = ANY($1::uuid[])"
)
_REMEMBER_MANY = (
    "INSERT INTO routed_tickets "
    "(ticket_id, domain, language, text, routed_at, priority, difficult, waiting_since) "
    "SELECT r.ticket_id, r.domain, r.language, r.text, $8, r.priority, r.difficult, r.waiting_since "
    "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[], "
    "$7::timestamptz[]) AS r(ticket_id, domain, language, text, priority, difficult, waiting_since) "
    "ON CONFLICT DO NOTHING RETURNING ticket_id"
)


def _available_specialists(presence: str, roles: str) -> str:
    """Online specialists with a free slot (`presence`, `roles`: the parameters' placeholders).
    When they were last assigned comes as epoch seconds: a float costs asyncpg a tenth of a
    timestamptz to decode (~0.1 vs ~1 µs), paid for every specialist in every run's read."""
    return (
        "SELECT a.id, a.active_tickets, a.max_concurrent, "
        "extract(epoch FROM a.last_assigned_at)::float8 AS last_assigned_epoch, a.profile, "
        "COALESCE(a.team_id, (SELECT t.id FROM teams t WHERE t.lead_id = a.id "
        "ORDER BY t.created_at, t.id LIMIT 1)) AS team_id "
        f"FROM agents a WHERE a.presence = {presence} AND a.roles && {roles}::varchar[] "
        "AND a.active_tickets < a.max_concurrent"
    )


_AVAILABLE_SPECIALISTS = _available_specialists("$1", "$2")


# A run's first read, in one round trip: it claims the run's inbox rows ($4–$7, `InboxClaim`),
# then a first row (``id`` NULL) has the events claimed now and the run's tickets that were routed
# before, and a row follows per available specialist. (The arrays only in the first row: repeated in
# every specialist's row, they were decoded a couple of hundred times per run.)
_CLAIM_ROUTED_AND_AVAILABLE = (
    f"WITH {InboxClaim.cte(4)}, routed AS (SELECT array({_ROUTED_AMONG}) AS ids) "
    "SELECT array(SELECT event_id FROM claimed) AS claimed_ids, routed.ids AS routed_ids, NULL::uuid AS id, "
    "NULL::integer AS active_tickets, NULL::integer AS max_concurrent, "
    "NULL::float8 AS last_assigned_epoch, NULL::text AS profile, NULL::uuid AS team_id FROM routed "
    f"UNION ALL SELECT NULL, NULL, s.* FROM ({_available_specialists('$2', '$3')}) s"
)
# The agents' rows are locked in id order first: concurrent runs then queue for them instead of
# deadlocking (an UPDATE ... FROM locks in whatever order its join produces the rows).
# Parameters: $1 agent ids (sorted), $2 slots of each, $3 the time, $4 the presence they must have.
_LOCKED = (
    "locked AS MATERIALIZED (SELECT id FROM agents WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE) "
)
_TAKE_SLOTS = (
    "UPDATE agents AS a SET active_tickets = a.active_tickets + t.slots, last_assigned_at = $3 "
    "FROM locked, unnest($1::uuid[], $2::integer[]) AS t(agent_id, slots) "
    "WHERE a.id = locked.id AND a.id = t.agent_id AND a.presence = $4 "
    "AND a.active_tickets + t.slots <= a.max_concurrent "
    "RETURNING a.id"
)
_LOCK_AND_TAKE_SLOTS = _LOCKED + _TAKE_SLOTS
_TAKE_CAPACITY_MANY = f"WITH {_LOCK_AND_TAKE_SLOTS}"


# A run's assignments and the slots they take, in one statement (one round trip fewer per run) —
# with the run's events too when given (`assign_and_take_many` adds them as a CTE between the two,
# their parameters from $10 on).
def _assigned(where: str = "") -> str:
    """The CTE storing a run's assignments ($3 the time, $5–$9 their columns), filtered by ``where``."""
    return (
        "assigned AS (INSERT INTO assignments (ticket_id, agent_id, reason, assigned_at, domain, language) "
        "SELECT a.ticket_id, a.agent_id, a.reason, $3, a.domain, a.language "
        "FROM unnest($5::uuid[], $6::uuid[], $7::text[], $8::text[], $9::text[]) "
        f"AS a(ticket_id, agent_id, reason, domain, language){where}), "
    )


_ASSIGNED = _assigned()
_ASSIGN_AND_TAKE_MANY = f"WITH {_ASSIGNED}{_LOCK_AND_TAKE_SLOTS}"
_FIRST_EVENTS_PARAMETER = 10
# Remember a run's tickets and start the clocks of those remembered now, in one statement; a row
# per ticket remembered now, each with the number of clocks started.
_REMEMBERED_AND_CLOCKS = (
    f"remembered AS ({_REMEMBER_MANY}), "
    "clocks AS (INSERT INTO sla_timers (ticket_id, target, policy_id, calendar_id, priority, started_at, "
    "due_at, warn_at, escalated) SELECT c.*, false FROM unnest($9::uuid[], $10::text[], $11::uuid[], "
    "$12::text[], $13::text[], $14::timestamptz[], $15::timestamptz[], $16::timestamptz[]) "
    "AS c(ticket_id, target, policy_id, calendar_id, priority, started_at, due_at, warn_at) "
    "WHERE c.ticket_id IN (SELECT ticket_id FROM remembered) ON CONFLICT DO NOTHING RETURNING ticket_id) "
)
_REMEMBER_AND_START_CLOCKS = (
    f"WITH {_REMEMBERED_AND_CLOCKS}"
    "SELECT r.ticket_id, (SELECT count(*) FROM clocks) AS clocks FROM remembered r"
)


def _shifted(sql: str, by: int) -> str:
    """``sql`` with its parameter placeholders renumbered ($1 -> $(1 + by)), to be combined."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + by}", sql)


# A run whose tickets all went to specialists of its snapshot — the common case — in ONE statement
# after its first read: remembered, clocks started, assignments stored, events stored, slots taken.
# Parameters: $1–$9 as `_ASSIGN_AND_TAKE_MANY` (the assignments restricted to tickets remembered
# now), $10–$25 as `_REMEMBER_AND_START_CLOCKS`, the events' from $26. One row: how many agents'
# slots were taken, tickets remembered and clocks started — the caller rolls back if any falls short.
_REMEMBER_ASSIGN_AND_TAKE = (
    f"WITH {_shifted(_REMEMBERED_AND_CLOCKS, 9)}, "
    + _assigned(" WHERE a.ticket_id IN (SELECT ticket_id FROM remembered)")
    + "{events}"
    + _LOCKED
    + f", taken AS ({_TAKE_SLOTS}) "
    "SELECT (SELECT count(*) FROM taken) AS taken, (SELECT count(*) FROM remembered) AS remembered, "
    "(SELECT count(*) FROM clocks) AS clocks"
)
_REMEMBER_ASSIGN_FIRST_EVENTS_PARAMETER = 26
_CLOCK_COLUMNS = (
    "ticket_id",
    "target",
    "policy_id",
    "calendar_id",
    "priority",
    "started_at",
    "due_at",
    "warn_at",
)


def _routing_columns(rows: Sequence[NewRouting], now: datetime) -> list[Any]:
    """The parameters $1–$8 of `_REMEMBER_MANY`: one array per column, then the routing time."""
    return [
        [r.ticket_id for r in rows],
        [r.domain for r in rows],
        [r.language for r in rows],
        [r.text for r in rows],
        [r.priority.value for r in rows],
        [r.difficult for r in rows],
        [r.waiting_since for r in rows],
        now,
    ]


def _assignment_parameters(
    assignments: Sequence[NewAssignment], now: datetime
) -> tuple[list[uuid.UUID], list[Any]]:
    """The chosen agents (sorted) and the parameters $1–$9 of `_ASSIGN_AND_TAKE_MANY`: those agents
    and the slots each takes, the time, the presence they must have, one array per assignment column."""
    slots = collections.Counter(a.agent_id for a in assignments)
    ids = sorted(slots)
    return ids, [
        ids,
        [slots[i] for i in ids],
        now,
        AgentPresence.ONLINE.value,
        [a.ticket_id for a in assignments],
        [a.agent_id for a in assignments],
        [a.reason[:200] for a in assignments],
        [a.domain for a in assignments],
        [a.language for a in assignments],
    ]


class RoutingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: Team | Agent) -> None:
        self.session.add(row)
        await self.session.flush()

    async def team(self, team_id: uuid.UUID) -> Team | None:
        return await self.session.get(Team, team_id)

    async def team_named(self, name: str) -> Team | None:
        return (await self.session.execute(select(Team).where(Team.name == name))).scalar_one_or_none()

    async def teams(self) -> Sequence[Team]:
        return (await self.session.execute(select(Team).order_by(Team.name))).scalars().all()

    async def agent(self, agent_id: uuid.UUID) -> Agent | None:
        return await self.session.get(Agent, agent_id)

    async def teams_led_by(self, agent_id: uuid.UUID) -> Sequence[Team]:
        return (
            (await self.session.execute(select(Team).where(Team.lead_id == agent_id).order_by(Team.name)))
            .scalars()
            .all()
        )

    async def team_size(self, team_id: uuid.UUID) -> int:
        """How many agents belong to the team (deactivated agents belong to none)."""
        return int(
            await self.session.scalar(select(func.count()).select_from(Agent).where(Agent.team_id == team_id))
            or 0
        )

    async def agents_page(
        self,
        params: PageParams,
        *,
        team_id: uuid.UUID | None = None,
        presence: str | None = None,
        include_inactive: bool = False,
    ) -> Sequence[Agent]:
        """A page of agents — active ones only unless `include_inactive` (deactivated agents)."""
        stmt = select(Agent)
        if not include_inactive:
            stmt = stmt.where(Agent.deactivated_at.is_(None))
        if team_id is not None:
            stmt = stmt.where(Agent.team_id == team_id)
        if presence is not None:
            stmt = stmt.where(Agent.presence == presence)
        stmt = keyset_page(stmt, created_col=Agent.created_at, id_col=Agent.id, params=params)
        return (await self.session.execute(stmt)).scalars().all()

    async def assignments_of(self, agent_ids: Sequence[uuid.UUID]) -> Sequence[Assignment]:
        """The agents' current tickets, oldest first."""
        stmt = (
            select(Assignment)
            .where(Assignment.agent_id.in_(agent_ids))
            .order_by(Assignment.assigned_at, Assignment.ticket_id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def queue_summary(self) -> Sequence[Row[str | None, str, int, datetime]]:
        """(domain, priority, count, oldest queued_at) of the waiting tickets."""
        stmt = select(
            QueueEntry.domain, QueueEntry.priority, func.count(), func.min(QueueEntry.waiting_since)
        ).group_by(QueueEntry.domain, QueueEntry.priority)
        return (await self.session.execute(stmt)).all()

    async def lock_assignments_of(self, agent_id: uuid.UUID) -> None:
        """Lock the agent's assignments (in ticket order) until commit. Taken before the agent's
        row by whoever changes both, as a resolution, a transfer and a reopen do (assignment,
        then agent): the other order waits for them while they wait for it."""
        await self.session.execute(
            select(Assignment.ticket_id)
            .where(Assignment.agent_id == agent_id)
            .order_by(Assignment.ticket_id)
            .with_for_update()
        )

    async def lock_agent(self, agent_id: uuid.UUID) -> Agent | None:
        """The agent, locked until commit: presence and capacity changes wait for each other, and
        a concurrent `take_capacity` re-checks its conditions against the outcome."""
        return await self.session.get(Agent, agent_id, with_for_update=True, populate_existing=True)

    async def available_specialists(self) -> list[Candidate]:
        """Online specialists with a free slot, with their skills and languages: one query per
        decision, the skill tiers are sorted out in `domain.assignment.order_candidates`."""
        driver = await self._driver()
        rows = await driver.fetch(
            _AVAILABLE_SPECIALISTS, AgentPresence.ONLINE.value, sorted(SPECIALIST_ROLES)
        )
        return _snapshot_candidates(rows)

    async def online_candidate(self, agent_id: uuid.UUID | None) -> Candidate | None:
        """The agent as a candidate if online (capacity is checked when the slot is taken)."""
        if agent_id is None:
            return None
        row = (
            await self.session.execute(
                select(*_CANDIDATE_COLUMNS).where(
                    Agent.id == agent_id, Agent.presence == AgentPresence.ONLINE
                )
            )
        ).first()
        return _candidate(row._mapping) if row else None

    async def lead_of(self, agent_id: uuid.UUID | None) -> uuid.UUID | None:
        """The lead responsible for the agent: the agent if they lead a team, else their team's lead."""
        if agent_id is None:
            return None
        if await self.session.scalar(select(exists().where(Team.lead_id == agent_id))):
            return agent_id
        return await self.session.scalar(
            select(Team.lead_id).join(Agent, Agent.team_id == Team.id).where(Agent.id == agent_id)
        )

    async def lead(self, agent_id: uuid.UUID | None) -> Lead | None:
        """The agent as a lead candidate, online or not (None if unknown)."""
        if agent_id is None:
            return None
        row = (
            await self.session.execute(
                select(*_CANDIDATE_COLUMNS, Agent.presence).where(Agent.id == agent_id)
            )
        ).first()
        return Lead(_candidate(row._mapping), row.presence == AgentPresence.ONLINE) if row else None

    async def lead_for(self, domain: str | None) -> Lead | None:
        """The lead of the domain's team — the one the queue view files the domain under
        (`team_for_domain`) — online or not: presence decides whether a difficult ticket waits for
        them. When that team has no lead (or nobody's specialists hold the domain): the lead of
        the team holding most agents in `domain`, its lead counted (any team with a lead if None)."""
        if (holder := await self.team_for_domain(domain)) is not None:
            lead_id = await self.session.scalar(select(Team.lead_id).where(Team.id == holder[0]))
            if lead_id is not None and (lead := await self.lead(lead_id)) is not None:
                return lead
        skilled = (
            func.count(Agent.id).filter(Agent.domains.any_() == domain) if domain else func.count(Agent.id)
        )
        team = (
            select(Team.lead_id)
            .join(Agent, or_(Agent.team_id == Team.id, Agent.id == Team.lead_id))
            .where(Team.lead_id.is_not(None))
            .group_by(Team.id, Team.lead_id)
            .order_by(skilled.desc(), Team.created_at)
            .limit(1)
        ).scalar_subquery()
        row = (
            await self.session.execute(select(*_CANDIDATE_COLUMNS, Agent.presence).where(Agent.id == team))
        ).first()
        return Lead(_candidate(row._mapping), row.presence == AgentPresence.ONLINE) if row else None

    async def team_of(self, agent_id: uuid.UUID) -> uuid.UUID | None:
        """The agent's team (for a lead who is no team's member, the team they lead)."""
        return await self.session.scalar(select(_TEAM).where(Agent.id == agent_id))

    async def team_for_domain(self, domain: str | None) -> tuple[uuid.UUID, str] | None:
        """(id, name) of the team that holds `domain` best: the highest summed skill level of its
        specialists in it, then the most such specialists, then the older team; None if nobody does."""
        if domain is None:
            return None
        level = func.coalesce(Agent.skill_levels[domain].astext.cast(Integer), DEFAULT_SKILL_LEVEL)
        row = (
            await self.session.execute(
                select(Team.id, Team.name)
                .join(Agent, Agent.team_id == Team.id)
                .where(Agent.domains.any_() == domain, Agent.roles.overlap(list(SPECIALIST_ROLES)))
                .group_by(Team.id, Team.name, Team.created_at)
                .order_by(func.sum(level).desc(), func.count(Agent.id).desc(), Team.created_at, Team.id)
                .limit(1)
            )
        ).first()
        return (row.id, row.name) if row else None

    async def take_capacity(self, agent_id: uuid.UUID, now: datetime) -> bool:
        """Atomically claim one slot; False if the agent filled up or went away meanwhile."""
        return await self.take_capacity_many({agent_id: 1}, now)

    async def _driver(self) -> Any:
        """The asyncpg connection under the session's transaction (see `UnitOfWork.driver_connection`)."""
        return await driver_connection(self.session)

    async def take_capacity_many(self, slots: dict[uuid.UUID, int], now: datetime) -> bool:
        """Atomically claim ``slots[agent]`` slots of each agent (rows in id order); False — and
        nothing taken by a caller that then rolls back — if any agent filled up or went away."""
        ids = sorted(slots)
        driver = await self._driver()
        taken = await driver.fetch(
            _TAKE_CAPACITY_MANY, ids, [slots[i] for i in ids], now, AgentPresence.ONLINE.value
        )
        return len(taken) == len(ids)

    async def assign_and_take_many(
        self,
        assignments: Sequence[NewAssignment],
        now: datetime,
        *,
        events: Callable[..., tuple[str, list[list[Any]]] | None] | None = None,
    ) -> bool:
        """Store the assignments and claim their agents' slots, as `take_capacity_many` does, in one
        statement — with the unit of work's pending events when ``events`` is its `events_insert`;
        False — the caller must roll back — if an agent filled up or went away."""
        ids, parameters = _assignment_parameters(assignments, now)
        insert = events(first_parameter=_FIRST_EVENTS_PARAMETER) if events is not None else None
        statement, event_parameters = (
            (f"WITH {_ASSIGNED}events AS ({insert[0]}), {_LOCK_AND_TAKE_SLOTS}", insert[1])
            if insert is not None
            else (_ASSIGN_AND_TAKE_MANY, [])
        )
        driver = await self._driver()
        taken = await driver.fetch(statement, *parameters, *event_parameters)
        return len(taken) == len(ids)

    async def remember_assign_and_take(
        self,
        rows: Sequence[NewRouting],
        clocks: Sequence[dict[str, Any]],
        assignments: Sequence[NewAssignment],
        now: datetime,
        *,
        events: Callable[..., tuple[str, list[list[Any]]] | None],
    ) -> RunStored:
        """`remember_and_start_clocks`, then `assign_and_take_many` (assignments of tickets
        remembered now only) with the unit of work's pending events — one statement. The caller
        rolls back unless every agent's slots were taken, every ticket remembered now and every
        clock new (`RunStored`)."""
        ids, parameters = _assignment_parameters(assignments, now)
        insert = events(first_parameter=_REMEMBER_ASSIGN_FIRST_EVENTS_PARAMETER)
        events_cte, event_parameters = (f"events AS ({insert[0]}), ", insert[1]) if insert else ("", [])
        driver = await self._driver()
        row = await driver.fetchrow(
            _REMEMBER_ASSIGN_AND_TAKE.replace("{events}", events_cte),
            *parameters,
            *_routing_columns(rows, now),
            *([clock[c] for clock in clocks] for c in _CLOCK_COLUMNS),
            *event_parameters,
        )
        return RunStored(
            slots_taken=row["taken"] == len(ids), remembered=row["remembered"], clocks=row["clocks"]
        )

    async def assignment(self, ticket_id: uuid.UUID) -> Assignment | None:
        return await self.session.get(Assignment, ticket_id)

    async def assign(
        self,
        ticket_id: uuid.UUID,
        agent_id: uuid.UUID,
        reason: str,
        now: datetime,
        *,
        domain: str | None = None,
        language: str | None = None,
        touched_at: datetime | None = None,
        slot_released_at: datetime | None = None,
    ) -> None:
        """Store the assignment (its slot taken by the caller); ``touched_at``: the agent's work on
        the ticket it carries over (a reopened ticket back with the agent who worked on it);
        ``slot_released_at``: an answered ticket that holds no slot (a transfer moving it as it is,
        no slot taken)."""
        self.session.add(
            Assignment(
                ticket_id=ticket_id,
                agent_id=agent_id,
                reason=reason[:200],
                assigned_at=now,
                domain=domain,
                language=language,
                touched_at=touched_at,
                slot_released_at=slot_released_at,
            )
        )
        await self.session.flush()

    async def enqueue(
        self,
        ticket_id: uuid.UUID,
        priority: Priority,
        now: datetime,
        *,
        waiting_since: datetime,
        domain: str | None = None,
        language: str | None = None,
        difficult: bool = False,
        lead_id: uuid.UUID | None = None,
    ) -> None:
        """Queue the ticket; its place is by priority, then `waiting_since` (the customer's wait)."""
        await self.session.execute(
            pg_insert(QueueEntry)
            .values(
                ticket_id=ticket_id,
                priority=priority,
                priority_rank=priority.rank,
                queued_at=now,
                waiting_since=waiting_since,
                domain=domain,
                language=language,
                difficult=difficult,
                lead_id=lead_id,
            )
            .on_conflict_do_nothing()
        )

    async def touch(self, ticket_id: uuid.UUID, author_id: uuid.UUID, at: datetime) -> None:
        """The assignee, or one of the ticket's collaborators, worked on the ticket (the first time
        counts): a draft a lead's collaborator wrote is work its assignee going offline must keep."""
        collaborates = exists().where(
            TicketCollaborator.ticket_id == ticket_id, TicketCollaborator.agent_id == author_id
        )
        await self.session.execute(
            update(Assignment)
            .where(
                Assignment.ticket_id == ticket_id,
                or_(Assignment.agent_id == author_id, collaborates),
                Assignment.touched_at.is_(None),
            )
            .values(touched_at=at)
        )

    async def release_untouched(
        self, agent_id: uuid.UUID, *, only: Collection[uuid.UUID] | None = None
    ) -> list[Returned]:
        """Take back every ticket the agent has not worked on (``only``: those of these tickets),
        giving back their slots. An answered ticket (its slot given back at the delivery) is not
        taken back: it waits for its customer."""
        held = [
            Assignment.agent_id == agent_id,
            Assignment.touched_at.is_(None),
            Assignment.slot_released_at.is_(None),
        ]
        if only is not None:
            held.append(Assignment.ticket_id.in_(list(only)))
        rows = (
            await self.session.execute(
                delete(Assignment)
                .where(*held)
                .returning(
                    Assignment.ticket_id, Assignment.domain, Assignment.language, Assignment.assigned_at
                )
            )
        ).all()
        if not rows:
            return []
        await self.session.execute(
            update(Agent)
            .where(Agent.id == agent_id)
            .values(active_tickets=func.greatest(Agent.active_tickets - len(rows), 0))
        )
        routed = {
            r.ticket_id: r
            for r in await self.session.execute(
                select(RoutedTicket.ticket_id, RoutedTicket.waiting_since, RoutedTicket.difficult).where(
                    RoutedTicket.ticket_id.in_([r.ticket_id for r in rows])
                )
            )
        }
        ordered = sorted(rows, key=lambda r: (r.assigned_at, r.ticket_id))
        return [
            Returned(
                r.ticket_id,
                r.domain,
                r.language,
                # Tickets routed before routing remembered the wait: since their assignment.
                routed[r.ticket_id].waiting_since if r.ticket_id in routed else r.assigned_at,
                routed[r.ticket_id].difficult if r.ticket_id in routed else False,
            )
            for r in ordered
        ]

    async def ticket_priority(self, ticket_id: uuid.UUID) -> Priority:
        """The ticket's priority as its SLA clocks know it (raised by escalations), else as routing
        gave it (no policy matched), else normal (routed before routing remembered it)."""
        clocks = (
            select(SlaTimer.priority)
            .where(SlaTimer.ticket_id == ticket_id, SlaTimer.target == SlaTarget.FIRST_RESPONSE)
            .scalar_subquery()
        )
        routed = select(RoutedTicket.priority).where(RoutedTicket.ticket_id == ticket_id).scalar_subquery()
        stored = await self.session.scalar(select(func.coalesce(clocks, routed)))
        return (
            Priority(stored)
            if stored is not None and stored in Priority._value2member_map_
            else Priority.NORMAL
        )

    async def already_routed(self, ticket_id: uuid.UUID) -> bool:
        """Routed before (assignments and the queue also count: tickets routed before the
        `routed_tickets` table existed have no row in it)."""
        return ticket_id in await self.routed_among([ticket_id])

    async def routed_among(self, ticket_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """The tickets of ``ticket_ids`` routed before (see `already_routed`)."""
        driver = await self._driver()
        return {row[0] for row in await driver.fetch(_ROUTED_AMONG, list(ticket_ids))}

    async def routed_and_available(
        self, ticket_ids: Sequence[uuid.UUID], claim: InboxClaim
    ) -> tuple[set[uuid.UUID], list[Candidate], set[uuid.UUID]]:
        """A run's first read, in one round trip: the run's inbox ``claim``, `routed_among` and
        `available_specialists` — the tickets routed before, the snapshot of specialists and the
        events claimed now."""
        driver = await self._driver()
        rows = await driver.fetch(
            _CLAIM_ROUTED_AND_AVAILABLE,
            list(ticket_ids),
            AgentPresence.ONLINE.value,
            sorted(SPECIALIST_ROLES),
            *claim.parameters,
        )
        first = next(row for row in rows if row["id"] is None)
        specialists = _snapshot_candidates([row for row in rows if row["id"] is not None])
        return set(first["routed_ids"]), specialists, set(first["claimed_ids"])

    async def remember_and_start_clocks(
        self, rows: Sequence[NewRouting], clocks: Sequence[dict[str, Any]], now: datetime
    ) -> tuple[set[uuid.UUID], int]:
        """`remember_many`, then the clocks (rows as for `sla_repository.START_TIMERS`) of the
        tickets remembered now — one statement. Returns the tickets remembered now and how many
        of their clocks were new (a clock that already existed is left alone)."""
        driver = await self._driver()
        inserted = await driver.fetch(
            _REMEMBER_AND_START_CLOCKS,
            *_routing_columns(rows, now),
            *([clock[c] for clock in clocks] for c in _CLOCK_COLUMNS),
        )
        return {row[0] for row in inserted}, (inserted[0]["clocks"] if inserted else 0)

    async def remember_many(self, rows: Sequence[NewRouting], now: datetime) -> set[uuid.UUID]:
        """`remember` for many tickets in one statement; returns those recorded now."""
        driver = await self._driver()
        inserted = await driver.fetch(_REMEMBER_MANY, *_routing_columns(rows, now))
        return {row[0] for row in inserted}

    async def remember(
        self,
        ticket_id: uuid.UUID,
        *,
        domain: str | None,
        language: str | None,
        text: str,
        now: datetime,
        priority: Priority,
        difficult: bool,
        waiting_since: datetime,
    ) -> bool:
        """Record the routing of a ticket; False if another transaction did it first."""
        row = NewRouting(ticket_id, domain, language, text, priority, difficult, waiting_since)
        return ticket_id in await self.remember_many([row], now)

    async def note_reopened(self, ticket_id: uuid.UUID, *, waiting_since: datetime, difficult: bool) -> None:
        """A reopened ticket's wait starts again; once difficult, it stays difficult."""
        values: dict[str, Any] = {"waiting_since": waiting_since} | ({"difficult": True} if difficult else {})
        await self.session.execute(
            update(RoutedTicket).where(RoutedTicket.ticket_id == ticket_id).values(**values)
        )

    async def routed(self, ticket_id: uuid.UUID, *, lock: bool = False) -> RoutedTicket | None:
        return await self.session.get(RoutedTicket, ticket_id, with_for_update=lock or None)

    async def release_assignment(self, ticket_id: uuid.UUID) -> uuid.UUID | None:
        """Drop the ticket's assignment and give its agent the slot back (unless given back at
        its answer's delivery); returns that agent."""
        released = await self.drop_assignment(ticket_id)
        return released.agent_id if released is not None else None

    async def drop_assignment(self, ticket_id: uuid.UUID) -> Released | None:
        """`release_assignment`, saying what was dropped (None: the ticket was not assigned)."""
        row = (
            await self.session.execute(
                delete(Assignment)
                .where(Assignment.ticket_id == ticket_id)
                .returning(Assignment.agent_id, Assignment.touched_at, Assignment.slot_released_at)
            )
        ).first()
        if row is None:
            return None
        if row.slot_released_at is None:
            await self._give_back_slot(row.agent_id)
        return Released(row.agent_id, row.touched_at, slot_freed=row.slot_released_at is None)

    async def release_slot(self, ticket_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        """The ticket was answered: its agent gets its slot back, the assignment stays. Returns the
        agent whose slot was freed (None: not assigned, or its slot given back before)."""
        agent_id: uuid.UUID | None = await self.session.scalar(
            update(Assignment)
            .where(Assignment.ticket_id == ticket_id, Assignment.slot_released_at.is_(None))
            .values(slot_released_at=at)
            .returning(Assignment.agent_id)
        )
        if agent_id is not None:
            await self._give_back_slot(agent_id)
        return agent_id

    async def _give_back_slot(self, agent_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Agent)
            .where(Agent.id == agent_id, Agent.active_tickets > 0)
            .values(active_tickets=Agent.active_tickets - 1)
        )

    async def is_assigned(self, ticket_id: uuid.UUID) -> bool:
        """Whether someone holds the ticket, as committed now (never the session's identity map)."""
        return bool(await self.session.scalar(select(exists().where(Assignment.ticket_id == ticket_id))))

    async def dequeue(self, ticket_id: uuid.UUID) -> datetime | None:
        """Take the ticket out of the queue; returns since when it was waiting (None: not queued)."""
        result = await self.session.execute(
            delete(QueueEntry).where(QueueEntry.ticket_id == ticket_id).returning(QueueEntry.waiting_since)
        )
        return result.scalar_one_or_none()

    async def next_for_specialists(self) -> QueueEntry | None:
        """Highest priority, then longest waiting, among the tickets a specialist may take: all but
        the difficult ones whose lead is online (those wait for the lead) — a lead with no capacity
        at all is never waited for. Skipped if another replica is assigning it right now."""
        lead_waited_for = exists().where(
            Agent.id == QueueEntry.lead_id, Agent.presence == AgentPresence.ONLINE, Agent.max_concurrent > 0
        )
        stmt = (
            select(QueueEntry)
            .where(or_(not_(QueueEntry.difficult), ~lead_waited_for))
            .order_by(*_QUEUE_ORDER)
            .limit(1)
            .with_for_update(skip_locked=True, of=QueueEntry)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def next_for_free_lead(self) -> QueueEntry | None:
        """Highest priority, then longest waiting, among the difficult tickets waiting for a lead
        who is online with a free slot."""
        stmt = (
            select(QueueEntry)
            .join(Agent, Agent.id == QueueEntry.lead_id)
            .where(
                QueueEntry.difficult,
                Agent.presence == AgentPresence.ONLINE,
                Agent.active_tickets < Agent.max_concurrent,
            )
            .order_by(*_QUEUE_ORDER)
            .limit(1)
            .with_for_update(skip_locked=True, of=QueueEntry)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_free_agents(self) -> frozenset[uuid.UUID]:
        """Lock, in id order, every agent a drain may give a ticket to — online with a free slot, a
        specialist or a lead difficult tickets wait for — and return them. A drain takes slots of
        these only: taking each agent's row as a ticket's ranking comes, two drains deadlocked."""
        waited_for = select(QueueEntry.lead_id).where(QueueEntry.difficult, QueueEntry.lead_id.is_not(None))
        stmt = (
            select(Agent.id)
            .where(
                Agent.presence == AgentPresence.ONLINE,
                Agent.active_tickets < Agent.max_concurrent,
                or_(Agent.roles.overlap(list(SPECIALIST_ROLES)), Agent.id.in_(waited_for)),
            )
            .order_by(Agent.id)
            .with_for_update(key_share=True, of=Agent)
        )
        return frozenset((await self.session.execute(stmt)).scalars().all())

    async def stop_waiting_for_busy_leads(self, waiting_since: datetime) -> list[uuid.UUID]:
        """Difficult tickets waiting since ``waiting_since`` or before for a lead who cannot take
        them now (full, or not online) wait for nobody any more: any specialist may take them."""
        lead_free = exists().where(
            Agent.id == QueueEntry.lead_id,
            Agent.presence == AgentPresence.ONLINE,
            Agent.active_tickets < Agent.max_concurrent,
        )
        rows = await self.session.execute(
            update(QueueEntry)
            .where(
                QueueEntry.difficult,
                QueueEntry.lead_id.is_not(None),
                QueueEntry.waiting_since <= waiting_since,
                ~lead_free,
            )
            .values(lead_id=None)
            .returning(QueueEntry.ticket_id)
        )
        return list(rows.scalars().all())

    async def hand_over_waiting(self, from_lead: uuid.UUID, to_lead: uuid.UUID | None) -> None:
        """Difficult tickets waiting for someone who no longer leads any team wait for `to_lead`."""
        await self.session.execute(
            update(QueueEntry)
            .where(QueueEntry.lead_id == from_lead, ~exists().where(Team.lead_id == from_lead))
            .values(lead_id=to_lead)
        )

    async def queue_depth(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(QueueEntry)) or 0)
