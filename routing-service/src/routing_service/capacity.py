"""Capacity over a ticket's life: slots freed on resolution, the queue drained, reopened tickets returned.

A slot is taken atomically when a ticket is assigned (see `RoutingRepository.take_capacity`)
and given back when the ticket is resolved or closed; every freed slot immediately goes to
the most urgent, oldest queued ticket, offered first to whoever matches that ticket's domain
and language. A reopened ticket goes back to the agent who held it when that agent is online
with a free slot.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.enums import Priority
from helpdesk_shared.contracts.intake import TicketReopened
from helpdesk_shared.contracts.routing import TicketAssigned, TicketQueued
from routing_service.domain.assignment import Candidate, order_candidates
from routing_service.domain.difficulty import DEFAULT_POLICY
from routing_service.repository import RoutingRepository


async def _assign_first_free(
    uow: UnitOfWork,
    repo: RoutingRepository,
    ticket_id: uuid.UUID,
    candidates: list[Candidate],
    *,
    reason: str,
    now: datetime,
    previous_agent_id: uuid.UUID | None = None,
    domain: str | None = None,
    language: str | None = None,
) -> bool:
    for candidate in candidates:
        if await repo.take_capacity(candidate.agent_id, now):
            await repo.assign(ticket_id, candidate.agent_id, reason, now, domain=domain, language=language)
            uow.publish(
                TicketAssigned(
                    ticket_id=ticket_id,
                    agent_id=candidate.agent_id,
                    assigned_at=now,
                    reason=reason,
                    previous_agent_id=previous_agent_id,
                ),
                subject=str(ticket_id),
            )
            return True
    return False


async def drain_queue(uow: UnitOfWork, repo: RoutingRepository, now: datetime) -> int:
    """Assign queued tickets while someone has a free slot; returns how many were assigned."""
    assigned = 0
    while (entry := await repo.next_queued()) is not None:
        ordered = order_candidates(
            await repo.available_specialists(), domain=entry.domain, language=entry.language
        )
        if not await _assign_first_free(
            uow,
            repo,
            entry.ticket_id,
            [candidate for candidate, _ in ordered],
            reason="dequeued: capacity freed",
            now=now,
            domain=entry.domain,
            language=entry.language,
        ):
            break
        await repo.dequeue(entry.ticket_id)
        assigned += 1
    return assigned


async def release_ticket(uow: UnitOfWork, ticket_id: uuid.UUID) -> None:
    """A resolved or closed ticket frees its agent's slot (or leaves the queue)."""
    repo = RoutingRepository(uow.session)
    # Assignment first: if an agent going offline is handing this ticket back to the queue right
    # now, the delete waits for that transaction, and the dequeue after it then sees its entry.
    released = await repo.release_assignment(ticket_id)
    await repo.dequeue(ticket_id)
    if released is not None:
        await drain_queue(uow, repo, datetime.now(UTC))
    await uow.commit()


async def reassign_reopened(uow: UnitOfWork, event: TicketReopened) -> None:
    """Back to the previous agent when possible, else whoever is free, else the queue.

    A ticket reopened `reopen_limit` times is difficult (疑難問題): its previous agent's team
    lead takes it first.
    """
    repo = RoutingRepository(uow.session)
    if await repo.assignment(event.ticket_id) is not None:
        await repo.release_assignment(event.ticket_id)  # reopened while still held: re-decide
    now = datetime.now(UTC)
    previous = event.previous_agent_id
    routed = await repo.routed(event.ticket_id)
    domain, language = (routed.domain, routed.language) if routed is not None else (None, None)
    ordered: list[tuple[Candidate, str]] = []
    if event.reopen_count >= DEFAULT_POLICY.reopen_limit:
        lead = await repo.online_candidate(await repo.lead_of(previous))
        if lead is not None:
            ordered.append((lead, f"reopened {event.reopen_count} times: difficult, to the team lead"))
    if (back := await repo.online_candidate(previous)) is not None:
        ordered.append((back, "reopened: back to the previous agent"))
    ordered += [
        (c, "reopened: previous agent unavailable")
        for c, _ in order_candidates(await repo.available_specialists(), domain=domain, language=language)
        if c.agent_id != previous
    ]
    for candidate, reason in ordered:
        if await _assign_first_free(
            uow,
            repo,
            event.ticket_id,
            [candidate],
            now=now,
            previous_agent_id=previous,
            reason=reason,
            domain=domain,
            language=language,
        ):
            await uow.commit()
            return
    await repo.enqueue(
        event.ticket_id, Priority.NORMAL, Priority.NORMAL.rank, now, domain=domain, language=language
    )
    team = await repo.team_for_domain(domain)
    uow.publish(
        TicketQueued(
            ticket_id=event.ticket_id,
            team_id=team[0] if team else None,
            priority=Priority.NORMAL,
            queued_at=now,
            reason="reopened; nobody has free capacity",
        ),
        subject=str(event.ticket_id),
    )
    await uow.commit()
