"""Difficult tickets never wait for a lead who cannot take them, and a collaborator's answer is work.

* A lead with no capacity at all (``max_concurrent`` 0) is not waited for: the difficult ticket goes
  to the best specialist, and tickets already waiting for that lead become the specialists'.
* A difficult ticket waiting for its online but full lead longer than ``difficult_lead_wait_seconds``
  (from when the customer's wait began) is given up by the lead: any specialist may take it —
  the periodic queue sweep does it.
* An answer submitted by the assignee or by one of the ticket's collaborators marks the ticket as
  worked on: the assignee going offline keeps it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from types import SimpleNamespace

from capacity_factories import set_presence
from routing_factories import (
    ADMIN,
    agent,
    answer_submitted,
    consume,
    domain_rule,
    is_queued,
    isolated_team,
    load_of,
    owner_of,
    published,
    queue_entry,
    team,
    ticket_created,
)

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import TicketKind
from routing_service.capacity import queue_sweeper, sweep_queue
from routing_service.settings import RoutingSettings

ASSIGNED = "helpdesk.ticket.assigned.v1"


async def lead_team(routing: ServiceHarness, *, lead_capacity: int) -> tuple[str, str, str]:
    """A lead (role lead only) leading a team with one specialist in a domain of their own, everyone
    else offline; returns the lead, the specialist and the domain's keyword."""
    await isolated_team(routing)
    domain = f"疑難-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead = await agent(routing, name="組長", roles=["lead"], domains=[], max_concurrent=lead_capacity)
    team_id = await team(routing, lead_id=lead)
    specialist = await agent(routing, team_id=team_id, domains=[domain], max_concurrent=3)
    return lead, specialist, keyword


async def test_a_lead_with_no_capacity_is_not_waited_for(routing: ServiceHarness) -> None:
    lead, specialist, keyword = await lead_team(routing, lead_capacity=0)
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")

    await consume(routing, complaint)

    assert await owner_of(routing, complaint.data.ticket_id) == specialist
    (assigned,) = await published(routing, str(complaint.data.ticket_id), ASSIGNED)
    assert assigned["difficult"] is True
    assert await load_of(routing, lead) == 0


async def test_tickets_waiting_for_a_lead_whose_capacity_drops_to_zero_go_to_the_specialists(
    routing: ServiceHarness,
) -> None:
    lead, specialist, keyword = await lead_team(routing, lead_capacity=1)
    first, second = (ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴") for _ in range(2))
    await consume(routing, first)
    await consume(routing, second)
    assert await owner_of(routing, first.data.ticket_id) == lead
    assert await is_queued(routing, second.data.ticket_id)  # waits for the lead

    response = await routing.client.patch(f"/v1/agents/{lead}", headers=ADMIN, json={"max_concurrent": 0})

    assert response.status_code == 200, response.text
    assert await owner_of(routing, second.data.ticket_id) == specialist
    assert await owner_of(routing, first.data.ticket_id) == lead  # what the lead holds stays theirs


async def test_a_difficult_ticket_waiting_too_long_for_its_full_lead_goes_to_a_specialist(
    routing: ServiceHarness,
) -> None:
    _, specialist, keyword = await lead_team(routing, lead_capacity=1)
    first, second = (ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴") for _ in range(2))
    await consume(routing, first)
    await consume(routing, second)
    assert await is_queued(routing, second.data.ticket_id)

    assert await sweep_queue(routing.uow) == 0  # no bound: it waits for the lead
    assert await sweep_queue(routing.uow, lead_wait=timedelta(hours=1)) == 0  # not waited that long
    assert await is_queued(routing, second.data.ticket_id)
    assert await load_of(routing, specialist) == 0

    assert await sweep_queue(routing.uow, lead_wait=timedelta(0)) == 1

    assert await owner_of(routing, second.data.ticket_id) == specialist
    (assigned,) = await published(routing, str(second.data.ticket_id), ASSIGNED)
    assert (assigned["difficult"], assigned["agent_id"]) == (True, specialist)


async def test_the_sweeper_gives_up_waiting_for_a_full_lead_after_the_configured_wait(
    routing: ServiceHarness,
) -> None:
    lead, specialist, keyword = await lead_team(routing, lead_capacity=1)
    first, second = (ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴") for _ in range(2))
    await consume(routing, first)
    await consume(routing, second)
    entry = await queue_entry(routing, second.data.ticket_id)
    assert entry is not None and str(entry.lead_id) == lead
    settings = routing.runtime.settings
    assert isinstance(settings, RoutingSettings)
    assert (
        settings.difficult_lead_wait_seconds
        == RoutingSettings.model_fields["difficult_lead_wait_seconds"].default
    )
    quick = settings.model_copy(update={"queue_sweep_seconds": 0.05, "difficult_lead_wait_seconds": 0.01})

    runtime = SimpleNamespace(settings=quick, uow=routing.uow)  # what the sweeper reads of it
    sweeper = asyncio.create_task(queue_sweeper(runtime))  # type: ignore[arg-type]
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while await owner_of(routing, second.data.ticket_id) != specialist:
            assert asyncio.get_running_loop().time() < deadline, "the sweeper did not give it up"
            await asyncio.sleep(0.05)
    finally:
        sweeper.cancel()


async def test_a_collaborators_answer_counts_as_work_on_the_ticket(routing: ServiceHarness) -> None:
    lead, helper, keyword = await lead_team(routing, lead_capacity=3)
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")
    untouched = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴服務")
    await consume(routing, complaint)
    await consume(routing, untouched)
    assert await owner_of(routing, complaint.data.ticket_id) == lead
    added = await routing.client.put(
        f"/v1/tickets/{complaint.data.ticket_id}/collaborators/{helper}",
        headers=auth_headers("lead", sub=lead),
    )
    assert added.status_code == 200, added.text
    await consume(routing, answer_submitted(complaint.data.ticket_id, helper))  # the draft is the helper's
    await consume(routing, answer_submitted(untouched.data.ticket_id, helper))  # not theirs: no work

    body = await set_presence(routing, lead, "offline")

    assert body["returned_ticket_ids"] == [str(untouched.data.ticket_id)]
    assert await owner_of(routing, complaint.data.ticket_id) == lead
