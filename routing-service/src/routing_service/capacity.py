"""Capacity over a ticket's life: who takes what, the queue and its draining, reopened tickets.

A slot is taken atomically when a ticket is assigned (see `RoutingRepository.take_capacity`: a
conditional update, so concurrent replicas never push an agent over capacity) and given back when
the ticket's answer is delivered (`answer_delivered`), or — if that did not give it back already —
when the ticket is resolved or closed, transferred away, or handed back by an agent going offline.
An answered ticket stays its agent's (`Assignment.slot_released_at`): it waits for the customer,
who may reopen it — it then takes a slot again, its previous agent's when they have one free.

**The queue** holds whatever nobody could take, ordered by priority, then by how long the
customer has been waiting: from the ticket's creation (``ticket.created``'s ``created_at``) or
its last reopening (``reopened_at``) — not from when routing got round to the event, so a backlog
or a restart does not reorder same-priority tickets — and a ticket handed back to the queue keeps
its place. Every freed slot immediately goes to the queue: see `drain_queue`. A drain sees only
committed queue entries, so a slot freed while a ticket was being queued for it (the ticket found
the agent full, the holder's resolution drained before the queue entry committed) would wait for
that agent's next freed slot; `queue_sweeper` drains every ``queue_sweep_seconds`` to catch it.

**Difficult tickets (疑難問題) belong to the team lead**, so the queue does not treat them like
the rest. The policy, as a support team expects it:

* A difficult ticket goes to the lead of its domain's team (for a ticket reopened too often: the
  lead of its previous agent). When that lead is online but full, the ticket **waits in the queue
  for the lead** (`QueueEntry.lead_id`) rather than go to a specialist: a complaint handled by
  whoever happened to be free is exactly what 疑難問題 → 組長 is meant to prevent.
* When the lead is **away or offline** (or there is no lead, or a lead with no capacity at all),
  waiting would stall the ticket for an unknown time, so it goes to the best specialist (skill,
  language, load) instead — and a difficult ticket already waiting for a lead who leaves becomes
  any specialist's to take.
* The wait for a lead is bounded: a difficult ticket whose customer has waited
  ``difficult_lead_wait_seconds`` while its lead stayed full waits for nobody any more, and the
  next drain offers it to the specialists (`sweep_queue`, every ``queue_sweep_seconds``).
* A lead's freed slot takes, first, the most urgent and longest-waiting difficult ticket waiting
  for that lead; a lead who is also a specialist then takes ordinary tickets like anyone else.
* A specialist's freed slot takes the most urgent and longest-waiting ticket that is not waiting
  for an online lead: ordinary tickets, and difficult ones only when their lead is not online.
* The `ticket.assigned` of a difficult ticket says ``difficult: true`` whoever ends up with it.

A reopened ticket goes back to the agent who held it when that agent is online with a free slot
(a difficult one to its lead first, then — rather than wait for a full lead — to the agent who
held it, unless this reopening is what made it difficult); back with the same agent, it keeps
their work on it (``touched_at``) and is announced as `ticket.assigned` again, which moves it from
``reopened`` to ``assigned`` in intake.

**Locks.** Whoever frees a slot locks the ticket's assignment, then its agent's row, then drains.
A drain locks queue entries with ``SKIP LOCKED`` and, before taking its first slot, every agent it
may give a ticket to, in id order (`RoutingRepository.lock_free_agents`), and takes slots of those
only: two drains never wait for each other's agents in opposite orders (taking each agent's row
as a ticket's ranking came, they did). What a drain's caller locked before it — the agent whose
slot it freed, whose presence or capacity it changed, the candidates a reopening tried — stays
outside that order: another drain waits for such an agent only if it was already committed as
free (a slot is mostly freed on a full agent), and should both wait, PostgreSQL aborts one, whose
event is retried.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.logging import get_logger, traced
from helpdesk_shared.chassis.trace_context import new_traceparent
from helpdesk_shared.chassis.uow import UnitOfWork, UnitOfWorkFactory
from helpdesk_shared.contracts.enums import Priority
from helpdesk_shared.contracts.intake import TicketAnswerDelivered, TicketReopened
from helpdesk_shared.contracts.routing import TicketAssigned, TicketQueued
from routing_service import collaborators
from routing_service.domain.assignment import Candidate, order_candidates
from routing_service.domain.difficulty import DEFAULT_POLICY
from routing_service.models import QueueEntry
from routing_service.repository import Lead, Released, RoutingRepository
from routing_service.settings import RoutingSettings

log = get_logger(__name__)

DEQUEUED = "dequeued: capacity freed"


async def assign_first_free(
    uow: UnitOfWork,
    repo: RoutingRepository,
    ticket_id: uuid.UUID,
    candidates: list[tuple[Candidate, str]],
    *,
    now: datetime,
    difficult: bool = False,
    previous_agent_id: uuid.UUID | None = None,
    domain: str | None = None,
    language: str | None = None,
    held: Released | None = None,
) -> Candidate | None:
    """Give the ticket to the first candidate whose slot can still be taken, announcing it as
    `ticket.assigned` with the assignee's team; returns that candidate (None: all were full).

    ``held``: the assignment the ticket had until now (a reopening) — back with that agent, the
    ticket keeps their work on it. Announced all the same: intake moves a reopened ticket to
    ``assigned`` on it."""
    for candidate, reason in candidates:
        if await repo.take_capacity(candidate.agent_id, now):
            touched_at = held.touched_at if held is not None and held.agent_id == candidate.agent_id else None
            await repo.assign(
                ticket_id,
                candidate.agent_id,
                reason,
                now,
                domain=domain,
                language=language,
                touched_at=touched_at,
            )
            await collaborators.now_holds(uow, ticket_id, candidate.agent_id)
            uow.publish(
                TicketAssigned(
                    ticket_id=ticket_id,
                    agent_id=candidate.agent_id,
                    team_id=candidate.team_id,
                    assigned_at=now,
                    reason=reason,
                    difficult=difficult,
                    previous_agent_id=previous_agent_id,
                ),
                subject=str(ticket_id),
            )
            return candidate
    return None


def waits_for(lead: Lead | None) -> Candidate | None:
    """The lead a difficult ticket must wait for: only one who is online and takes tickets at all
    (a capacity of 0 never frees a slot)."""
    return lead.candidate if lead is not None and lead.online and lead.candidate.max_concurrent > 0 else None


async def queue_ticket(
    uow: UnitOfWork,
    repo: RoutingRepository,
    ticket_id: uuid.UUID,
    *,
    priority: Priority,
    waiting_since: datetime,
    now: datetime,
    reason: str,
    domain: str | None,
    language: str | None,
    difficult: bool = False,
    lead: Lead | None = None,
) -> None:
    """Queue the ticket and announce it as `ticket.queued` (under its lead's team while it waits
    for an online lead, else the team holding its domain best)."""
    await repo.enqueue(
        ticket_id,
        priority,
        now,
        waiting_since=waiting_since,
        domain=domain,
        language=language,
        difficult=difficult,
        lead_id=lead.candidate.agent_id if difficult and lead is not None else None,
    )
    waiting_for = waits_for(lead) if difficult else None
    if waiting_for is not None and waiting_for.team_id is not None:
        team_id: uuid.UUID | None = waiting_for.team_id
    else:
        team = await repo.team_for_domain(domain)
        team_id = team[0] if team else None
    uow.publish(
        TicketQueued(ticket_id=ticket_id, team_id=team_id, priority=priority, queued_at=now, reason=reason),
        subject=str(ticket_id),
    )


async def drain_queue(uow: UnitOfWork, repo: RoutingRepository, now: datetime) -> int:
    """Assign queued tickets while someone free may take one; returns how many were assigned.

    Each round, a lead with a free slot takes the head of the difficult tickets waiting for
    them, then the free specialists take the head of the rest (what is not waiting for an
    online lead), offered first to whoever matches its domain and language. Before its first
    slot, the drain locks every agent it may give a ticket to, in id order, and gives tickets to
    those only (see the module's *Locks*); whoever frees a slot later drains after it.

    A queue entry of a ticket that is assigned all the same (left by a race that is fixed; the
    drain must not fail on it for ever) is dropped, not assigned twice.
    """
    assigned = 0
    agents: frozenset[uuid.UUID] | None = None  # locked once there is something to give out
    while True:
        progress = False
        if (entry := await repo.next_for_free_lead()) is not None:
            if await _assigned_already(repo, entry):
                progress = True
            else:
                agents = agents if agents is not None else await repo.lock_free_agents()
                lead = await repo.online_candidate(entry.lead_id) if entry.lead_id in agents else None
                if lead is not None and await assign_first_free(
                    uow,
                    repo,
                    entry.ticket_id,
                    [(lead, DEQUEUED)],
                    now=now,
                    difficult=True,
                    domain=entry.domain,
                    language=entry.language,
                ):
                    await repo.dequeue(entry.ticket_id)
                    assigned, progress = assigned + 1, True
        specialists = await repo.available_specialists()
        if specialists and (entry := await repo.next_for_specialists()) is not None:
            if await _assigned_already(repo, entry):
                progress = True
                continue
            if agents is None:
                agents = await repo.lock_free_agents()
                specialists = await repo.available_specialists()  # as they stand, now locked
            ordered = order_candidates(
                [c for c in specialists if c.agent_id in agents], domain=entry.domain, language=entry.language
            )
            if await assign_first_free(
                uow,
                repo,
                entry.ticket_id,
                [(candidate, DEQUEUED) for candidate, _ in ordered],
                now=now,
                difficult=entry.difficult,
                domain=entry.domain,
                language=entry.language,
            ):
                await repo.dequeue(entry.ticket_id)
                assigned, progress = assigned + 1, True
        if not progress:
            return assigned


async def _assigned_already(repo: RoutingRepository, entry: QueueEntry) -> bool:
    """Drop the (locked) queue entry if its ticket is assigned anyway: True when dropped."""
    if not await repo.is_assigned(entry.ticket_id):
        return False
    await repo.dequeue(entry.ticket_id)
    log.warning("queue_entry_of_assigned_ticket_dropped", ticket_id=str(entry.ticket_id))
    return True


async def sweep_queue(uow_factory: UnitOfWorkFactory, *, lead_wait: timedelta | None = None) -> int:
    """Drain the queue once, woken by nothing; returns how many tickets were assigned.

    ``lead_wait``: difficult tickets whose customer has waited that long for a lead who is still
    full stop waiting for the lead first (see `RoutingRepository.stop_waiting_for_busy_leads`).

    A sweep is caused by no request or event: it is a trace of its own (the `traceparent` of the
    `ticket.assigned` it publishes, the `trace_id` of its log lines)."""
    with traced(new_traceparent()):
        async with uow_factory() as uow:
            repo = RoutingRepository(uow.session)
            if await repo.queue_depth() == 0:
                return 0
            now = datetime.now(UTC)
            given_up = (
                await repo.stop_waiting_for_busy_leads(now - lead_wait) if lead_wait is not None else []
            )
            assigned = await drain_queue(uow, repo, now)
            if assigned or given_up:
                await uow.commit()
        if given_up:
            log.info("difficult_tickets_stopped_waiting_for_lead", tickets=[str(t) for t in given_up])
        if assigned:
            log.info("queue_swept", assigned=assigned)  # a wake-up the event-driven drains missed
        return assigned


async def queue_sweeper(runtime: ServiceRuntime) -> None:
    """Background task of the routing service: `sweep_queue` every ``queue_sweep_seconds``."""
    settings = runtime.settings
    assert isinstance(settings, RoutingSettings)
    lead_wait = timedelta(seconds=settings.difficult_lead_wait_seconds)
    while True:
        await asyncio.sleep(settings.queue_sweep_seconds)
        try:
            await sweep_queue(runtime.uow, lead_wait=lead_wait)
        except Exception as exc:  # a database hiccup must not end the sweeps for good
            log.warning("queue_sweep_failed", error=repr(exc))


async def release_ticket(uow: UnitOfWork, ticket_id: uuid.UUID) -> None:
    """A resolved or closed ticket frees its agent's slot (or leaves the queue)."""
    repo = RoutingRepository(uow.session)
    released, _ = await _unassign(repo, ticket_id)
    if released is not None and released.slot_freed:
        await drain_queue(uow, repo, datetime.now(UTC))
    await uow.commit()


async def _unassign(repo: RoutingRepository, ticket_id: uuid.UUID) -> tuple[Released | None, datetime | None]:
    """Take the ticket from its agent (giving back the slot it holds) and out of the queue, whatever
    is assigning or queueing it right now; returns what was dropped and since when it was queued.

    Assignment first: if an agent going offline is handing this ticket back to the queue right
    now, the delete waits for that transaction, and the dequeue after it then sees its entry. A
    drain may be assigning it from the queue: the dequeue waits for that transaction's lock on the
    entry, and its assignment is visible to a new statement then — hence the second delete. (A
    first read of the assignment, without a lock, would miss both.)"""
    released = await repo.drop_assignment(ticket_id)
    queued_since = await repo.dequeue(ticket_id)
    if released is None and queued_since is None:
        released = await repo.drop_assignment(ticket_id)
    return released, queued_since


async def answer_delivered(uow: UnitOfWork, event: TicketAnswerDelivered) -> None:
    """The answer reached the customer: its agent's slot goes back to the queue at once (once per
    assignment — a redelivery or a follow-up's delivery gives nothing more), the ticket stays theirs."""
    repo = RoutingRepository(uow.session)
    if await repo.release_slot(event.ticket_id, event.delivered_at) is not None:
        await drain_queue(uow, repo, datetime.now(UTC))
    await uow.commit()


async def reassign_reopened(uow: UnitOfWork, event: TicketReopened) -> None:
    """Back to the previous agent when possible, else whoever is free, else the queue.

    A difficult ticket — so classified, or reopened `reopen_limit` times (疑難問題) — goes to its
    lead first: the previous agent's lead (a lead keeps their own), else the lead of its domain;
    while that lead is online it waits for them. The ticket keeps its priority; its wait counts
    from the reopening.
    """
    repo = RoutingRepository(uow.session)
    # Still held (answered), or queued: re-decide. Queued, it keeps its place.
    released, queued_since = await _unassign(repo, event.ticket_id)
    waiting_since = queued_since or event.reopened_at
    now = datetime.now(UTC)
    previous = event.previous_agent_id
    routed = await repo.routed(event.ticket_id)
    domain, language = (routed.domain, routed.language) if routed is not None else (None, None)
    reopened_often = event.reopen_count >= DEFAULT_POLICY.reopen_limit
    was_difficult = routed is not None and routed.difficult
    difficult = reopened_often or was_difficult
    await repo.note_reopened(event.ticket_id, waiting_since=waiting_since, difficult=reopened_often)
    priority = await repo.ticket_priority(event.ticket_id)
    lead: Lead | None = None
    if difficult:
        lead = await repo.lead(await repo.lead_of(previous)) or await repo.lead_for(domain)
    ordered: list[tuple[Candidate, str]] = []
    if (waiting_for := waits_for(lead)) is not None:
        why = f"reopened {event.reopen_count} times" if reopened_often else "reopened"
        ordered.append((waiting_for, f"{why}: difficult, to the team lead"))
        # Rather than wait for a full lead, back to whoever held it — unless it was theirs when
        # it was reopened too often: then it is the lead's to take.
        back = await repo.online_candidate(previous) if was_difficult else None
        if back is not None and back.agent_id != waiting_for.agent_id:
            ordered.append((back, "reopened: difficult, its team lead is busy: back to the previous agent"))
    else:
        if (back := await repo.online_candidate(previous)) is not None:
            ordered.append((back, "reopened: back to the previous agent"))
        ordered += [
            (c, "reopened: previous agent unavailable")
            for c, _ in order_candidates(await repo.available_specialists(), domain=domain, language=language)
            if c.agent_id != previous
        ]
    if not await assign_first_free(
        uow,
        repo,
        event.ticket_id,
        ordered,
        now=now,
        difficult=difficult,
        previous_agent_id=previous,
        domain=domain,
        language=language,
        held=released,
    ):
        await queue_ticket(
            uow,
            repo,
            event.ticket_id,
            priority=priority,
            waiting_since=waiting_since,
            now=now,
            reason="reopened; its team lead is busy" if waiting_for else "reopened; nobody has free capacity",
            domain=domain,
            language=language,
            difficult=difficult,
            lead=lead,
        )
    if released is not None and released.slot_freed:  # unless it took the ticket back: the queue's
        await drain_queue(uow, repo, now)
    await uow.commit()
