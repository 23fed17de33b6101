"""Routing a run of new tickets in one transaction: the consumer's fast path for `ticket.created`.

`service.route_new_ticket` decides one ticket with a dozen statements; at hundreds of tickets a
second that is the bottleneck (a transaction, an inbox row and every statement paid per ticket).
The consumer hands the `ticket.created` events waiting in a partition (a run, of one or many) here
together (`helpdesk_shared.chassis.consumer.Batched`) and this module makes the same decisions
with a handful of plain-SQL statements for the whole run:

1. one query claims the run's inbox rows (the consumer's `InboxClaim`: a redelivered event is not
   routed again), finds the tickets routed before (replays) and reads the online specialists with
   a free slot (the run's snapshot of them) — the tickets are classified while it travels;
2. each ticket's SLA clocks are planned in memory (the configuration snapshot), and the ordinary
   tickets are given, in event order, to the best free specialist of the snapshot — the same
   ranking as `domain.assignment.order_candidates`, each choice counted before the next, and the
   slots this process's concurrent runs are storing counted too (`_BEING_TAKEN`);
3. when every ticket found a specialist (the common case), ONE statement remembers the tickets,
   starts their clocks, stores the assignments and the events and takes the slots (a conditional
   update of the agents — the rows concurrent runs wait for — so they are locked for that round
   trip and the commit only). If any chosen agent filled up or went away meanwhile (another
   replica, a presence change), or another delivery routed one of the tickets meanwhile, the
   statement says so and the whole run fails, to be routed again by the consumer — once more as
   a run (the race's winner has committed by then), then one ticket at a time, re-checking every
   slot;
4. otherwise the tickets are remembered and their clocks started first; difficult tickets (their
   lead) and tickets nobody could take (the queue) take the one-ticket path's own steps, and the
   specialists' assignments are stored with their slots taken as in 3. Clocks that already
   existed (a replay from before `routed_tickets`) send the whole run back to the one-ticket
   path, which re-plans them.

The events are those of the one-ticket path, in the same order for each ticket:
``ticket.classified`` (see `classification.announces_classification`), then ``ticket.assigned``
or ``ticket.queued``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from helpdesk_shared.chassis.consumer import InboxClaim, RetryRun, correlation_of, trace_of
from helpdesk_shared.chassis.logging import correlated, traced
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Priority
from helpdesk_shared.contracts.envelope import EventEnvelope
from helpdesk_shared.contracts.intake import TicketCreated
from helpdesk_shared.contracts.routing import TicketAssigned
from routing_service import classification, sla
from routing_service.domain.assignment import Candidate, CandidatePool
from routing_service.domain.difficulty import Decision
from routing_service.repository import NewAssignment, NewRouting, RoutingRepository
from routing_service.service import assign_or_queue, assignment_reason


class CapacityRace(RetryRun):
    """A chosen agent filled up or went away while the run was being decided (another run took
    the slot first): the consumer applies the run once more — with a snapshot that includes the
    winner's commit — and routes it one by one if that fails too."""


class RoutedMeanwhile(RetryRun):
    """Another delivery of some of the run's tickets routed them after the run's first read (it
    waited for that delivery's commit): the consumer applies the run once more, without them."""


class ClocksExisted(RuntimeError):
    """Some clocks already existed (a replay from before `routed_tickets`): route one by one."""


class _Routed(NamedTuple):
    ticket: TicketCreated
    decision: Decision
    version: int | None
    """The classifier version when the model decided."""
    correlation_id: str
    """Of the event that brought the ticket: its events carry it on."""
    traceparent: str
    """A child of the trace of the event that brought the ticket: its events continue that trace."""

    @property
    def priority(self) -> Priority:
        return Priority.URGENT if self.decision.urgent else self.ticket.priority


async def route_new_tickets(
    uow: UnitOfWork, events: list[EventEnvelope[Any]], claim: InboxClaim
) -> set[uuid.UUID]:
    """Route the tickets of ``events`` (in event order) as `service.route_new_ticket` would, one
    after the other.

    The first read inserts the run's inbox rows (``claim``: ``claim.event_ids[i]`` is the id of
    ``events[i]``) — one round trip fewer per run — and only the tickets whose events were claimed
    now are routed; returns those events' ids. A ticket's events carry the correlation id and the
    trace of its event, as they would if it were handled alone. Does not commit (the consumer
    commits the run)."""
    repo = RoutingRepository(uow.session)
    tickets: list[TicketCreated] = [event.data for event in events]
    first_copies: dict[uuid.UUID, TicketCreated] = {}
    correlation_ids: dict[uuid.UUID, str] = {}
    traceparents: dict[uuid.UUID, str] = {}
    for event, ticket in zip(events, tickets, strict=True):
        # A ticket's first copy, in its place: the run is decided in event order.
        first_copies.setdefault(ticket.ticket_id, ticket)
        correlation_ids.setdefault(ticket.ticket_id, correlation_of(event))
        if ticket.ticket_id not in traceparents:
            traceparents[ticket.ticket_id] = trace_of(event)
    unique = list(first_copies.values())
    # The classifier first (a query only when its snapshot is due for a reload); then the run's
    # first read is sent, and PostgreSQL answers it while the tickets are classified here (a
    # ticket routed before or redelivered — rare — is classified for nothing).
    classifier = await classification.current_classifier(uow.session)
    reading = asyncio.ensure_future(repo.routed_and_available([t.ticket_id for t in unique], claim))
    await asyncio.sleep(0)  # the read goes out
    try:
        decisions = classifier.decide_many(unique)
    finally:  # the connection is the read's until it is answered, whatever happened here
        routed_before, specialists, claimed = await reading
    # A ticket none of whose events was claimed now was handled before.
    claimed_tickets = {t.ticket_id for t, e in zip(tickets, claim.event_ids, strict=True) if e in claimed}
    routed_before |= first_copies.keys() - claimed_tickets
    decided = [
        _Routed(t, *d, correlation_ids[t.ticket_id], traceparents[t.ticket_id])
        for t, d in zip(unique, decisions, strict=True)
        if t.ticket_id not in routed_before
    ]
    if not decided:
        return claimed
    # Stamped after reading the specialists: a run that found them full (another run filled them
    # meanwhile) queues its tickets at a time after that run's assignments, never before.
    now = datetime.now(UTC)
    clocks = {  # planned in memory (the configuration snapshot), started with the remembering
        r.ticket.ticket_id: await sla.plan_timers(
            uow, r.ticket, difficult=r.decision.difficult, priority=r.priority
        )
        for r in decided
    }
    routings = [_routing(r) for r in decided]
    clock_rows = [row for planned in clocks.values() if planned is not None for row in planned[0]]
    if not any(r.decision.difficult for r in decided):
        choices, left = _choose(decided, specialists, now)
        if not left:  # the common case: every ticket to a specialist of the snapshot, one statement
            _publish_classified(uow, decided, clocks, now)
            assignments = _publish_assigned(uow, choices, now)
            with _being_taken(assignments):
                stored = await repo.remember_assign_and_take(
                    routings, clock_rows, assignments, now, events=uow.events_insert
                )
            if not stored.slots_taken:
                raise CapacityRace("an agent chosen for this run filled up or went away meanwhile")
            if stored.remembered < len(decided):
                raise RoutedMeanwhile("another delivery routed some of these tickets meanwhile")
            if stored.clocks < len(clock_rows):
                raise ClocksExisted("some clocks of these tickets already existed")
            return claimed
    remembered, started = await repo.remember_and_start_clocks(routings, clock_rows, now)
    routed = [r for r in decided if r.ticket.ticket_id in remembered]
    if started < sum(len(p[0]) for t, p in clocks.items() if p is not None and t in remembered):
        raise ClocksExisted("some clocks of these tickets already existed")
    _publish_classified(uow, routed, clocks, now)
    choices, left = _choose([r for r in routed if not r.decision.difficult], specialists, now)
    assignments = _publish_assigned(uow, choices, now)
    one_by_one = [r for r in routed if r.decision.difficult or r.ticket.ticket_id in left]
    if one_by_one:  # they read the agents' load from the database: take these slots first
        await _assign_and_take(repo, assignments, now)
        assignments = []
    for item in one_by_one:
        with correlated(item.correlation_id), traced(item.traceparent):
            await assign_or_queue(
                uow,
                repo,
                item.ticket.ticket_id,
                domain=item.decision.domain,
                language=item.ticket.language,
                difficult=item.decision.difficult,
                priority=item.priority,
                waiting_since=item.ticket.created_at,
                now=now,
            )
    # The agents' rows are what concurrent runs (other partitions, replicas) wait for: their
    # update is the last statement before the commit, so they are locked for one round trip —
    # the one that also stores the run's events.
    if assignments:
        await _assign_and_take(repo, assignments, now, uow=uow)
    else:
        await uow.write_events()
    return claimed


def _routing(item: _Routed) -> NewRouting:
    return NewRouting(
        ticket_id=item.ticket.ticket_id,
        domain=item.decision.domain,
        language=item.ticket.language,
        text=classification.ticket_text(item.ticket),
        priority=item.priority,
        difficult=item.decision.difficult,
        waiting_since=item.ticket.created_at,
    )


def _publish_classified(
    uow: UnitOfWork,
    routed: list[_Routed],
    clocks: dict[uuid.UUID, tuple[list[dict[str, Any]], sla.StartedTimers] | None],
    now: datetime,
) -> None:
    for item in routed:
        planned = clocks[item.ticket.ticket_id]
        if classification.announces_classification(item.decision, planned is not None):
            event = classification.classified_event(
                item.ticket, item.decision, item.version, now, planned[1] if planned else None
            )
            uow.publish(
                event,
                subject=str(item.ticket.ticket_id),
                correlationid=item.correlation_id,
                traceparent=item.traceparent,
            )


async def _assign_and_take(
    repo: RoutingRepository, assignments: list[NewAssignment], now: datetime, *, uow: UnitOfWork | None = None
) -> None:
    events = uow.events_insert if uow is not None else None
    with _being_taken(assignments):
        if assignments and not await repo.assign_and_take_many(assignments, now, events=events):
            raise CapacityRace("an agent chosen for this run filled up or went away meanwhile")


# Slots of each agent that runs of this process are storing right now (their statement sent, not
# yet answered). A concurrent run's snapshot does not show them yet, so it would rank those agents
# as free as before and choose the same ones — then wait for the first run's row locks until it
# commits. Counted as load, they make it choose the next agents as good instead (at 500 tickets/s,
# interleaved runs: group transactions ~14-17 instead of ~20-21 ms). The database still decides: a
# slot counted here or not, the conditional update never takes more than an agent has.
_BEING_TAKEN: collections.Counter[uuid.UUID] = collections.Counter()


@contextlib.contextmanager
def _being_taken(assignments: list[NewAssignment]) -> Iterator[None]:
    """The assignments' slots count as taken, for this process's other runs, until the block ends."""
    agents = collections.Counter(a.agent_id for a in assignments)
    _BEING_TAKEN.update(agents)
    try:
        yield
    finally:
        _BEING_TAKEN.subtract(agents)
        for agent in agents:
            if _BEING_TAKEN[agent] <= 0:
                del _BEING_TAKEN[agent]


class _Choice(NamedTuple):
    item: _Routed
    candidate: Candidate
    reason: str


def _choose(
    ordinary: list[_Routed], specialists: list[Candidate], now: datetime
) -> tuple[list[_Choice], set[uuid.UUID]]:
    """The best free specialist of the run's snapshot for each ordinary ticket, in event order,
    each choice counted before the next (and the slots other runs are storing, `_BEING_TAKEN`);
    and the tickets nobody could take."""
    if not ordinary:
        return [], set()
    pool = CandidatePool(
        [
            dataclasses.replace(c, active_tickets=c.active_tickets + _BEING_TAKEN[c.agent_id])
            if c.agent_id in _BEING_TAKEN
            else c
            for c in specialists
        ]
    )
    choices: list[_Choice] = []
    left: set[uuid.UUID] = set()
    for item in ordinary:
        domain, language = item.decision.domain, item.ticket.language
        best = pool.take(domain=domain, language=language, now=now)
        if best is None:
            left.add(item.ticket.ticket_id)
            continue
        candidate, match = best
        choices.append(_Choice(item, candidate, assignment_reason(match, domain, language)))
    return choices, left


def _publish_assigned(uow: UnitOfWork, choices: list[_Choice], now: datetime) -> list[NewAssignment]:
    """Publish each choice's `ticket.assigned`; the assignments, to be stored with their slots
    taken (`RoutingRepository.assign_and_take_many` or `remember_assign_and_take`)."""
    assignments: list[NewAssignment] = []
    for item, candidate, reason in choices:
        ticket_id = item.ticket.ticket_id
        assignments.append(
            NewAssignment(ticket_id, candidate.agent_id, reason, item.decision.domain, item.ticket.language)
        )
        uow.publish(
            TicketAssigned(
                ticket_id=ticket_id,
                agent_id=candidate.agent_id,
                team_id=candidate.team_id,
                assigned_at=now,
                reason=reason,
                difficult=False,
            ),
            subject=str(ticket_id),
            correlationid=item.correlation_id,
            traceparent=item.traceparent,
        )
    return assignments
