"""Capacity and the queue across real processes: 200 tickets posted to intake over five specialists
of capacity 3 and a team lead.

* No agent ever holds more than its capacity: checked on routing's ``GET /v1/agents``, sampled every
  20 ms for the whole run, and on the ``ticket.assigned`` / ``ticket.queued`` events read from
  Kafka, replayed against the resolutions the test makes.
* The rest is queued, and only once every specialist is full; complaints (difficult) go to the lead.
* Resolving tickets through intake, one at a time as their assignees, drains the queue strictly by
  priority (urgent, high, normal, low), then by age — since the ticket's creation at intake, not
  since routing got to it — each freed slot going to the queue's head.
* Every ``ticket.assigned`` names the assignee's team, so intake lists the team's tickets.

(An unauthorised transfer → 403 and an audited transfer in the timeline are in
``test_e2e_ticket_flow.py``.)
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpdesk_runtime._sync import run_sync
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.stack import Stack
from helpdesk_shared.contracts import Priority, TicketAssigned, TicketCreated, TicketQueued

from .routing_e2e import (
    AgentSampler,
    EventTap,
    Seen,
    Team,
    active_tickets,
    create_team,
    intake_tickets,
    launch_services,
    post_tickets,
    resolve_as_assignee,
    ticket_body,
    topic,
)
from .test_e2e_ticket_flow import eventually

pytestmark = pytest.mark.e2e

TICKETS = 200
SPECIALISTS = 5
CAPACITY = 3
COMPLAINTS_AT = (7, 61, 122, 183)
LEAD_CAPACITY = len(COMPLAINTS_AT) + 1  # room for every complaint: difficult tickets are the lead's
ASSIGNED = TicketAssigned.cloudevent_type()


def ticket_plan() -> list[dict[str, Any]]:
    """Mixed priorities in a fixed shuffled order, a few complaints among them."""
    priorities = ["low"] * 50 + ["normal"] * 70 + ["high"] * 50 + ["urgent"] * 30
    random.Random(4).shuffle(priorities)
    return [
        ticket_body(n, priority=p, kind="complaint" if n in COMPLAINTS_AT else "question")
        for n, p in enumerate(priorities)
    ]


def queue_order(
    queued: dict[uuid.UUID, TicketQueued], created: dict[uuid.UUID, TicketCreated]
) -> list[uuid.UUID]:
    """The order routing promises: priority, then age — the customer's wait, i.e. the ticket's
    ``created_at`` as intake announced it (ties by id).

    Not ``queued_at``: routing consumes a backlog partition by partition, so the order in which it
    queues tickets is not the order intake accepted them in, and must not decide who is served first.
    """
    return sorted(queued, key=lambda t: (-Priority(queued[t].priority).rank, created[t].created_at, t))


def test_two_hundred_tickets_over_five_specialists_of_capacity_three(infra: Infra, tmp_path: Path) -> None:
    stack = launch_services(infra, ("intake", "routing"), log_dir=tmp_path / "logs")
    try:
        run_scenario(stack, infra)
    finally:
        stack.stop()


def run_scenario(stack: Stack, infra: Infra) -> None:
    routing, intake = stack.url("routing"), stack.url("intake")
    team = create_team(routing, specialists=SPECIALISTS, capacity=CAPACITY, lead_capacity=LEAD_CAPACITY)
    bodies = ticket_plan()
    with (
        EventTap(infra.kafka_bootstrap, [topic(stack, "routing"), topic(stack, "intake")]) as tap,
        AgentSampler(routing) as sampler,
        httpx.Client(base_url=intake, timeout=10) as client,
    ):
        tickets = run_sync(lambda: post_tickets(intake, bodies))
        ids = [uuid.UUID(t["id"]) for t in tickets]
        body = dict(zip(ids, bodies, strict=True))

        tap.wait(
            lambda t: len(t.by_ticket(TicketAssigned, TicketQueued).keys() & set(ids)) == TICKETS,
            within=60,
            what="a routing decision for every ticket",
        )
        assigned, queued = first_decisions(tap, ids)
        check_intake_phase(team, body, assigned, queued)
        created = announced(tap, queued)
        assert active_tickets(routing) == expected_load(team, CAPACITY, len(COMPLAINTS_AT))

        holding = {
            agent: sorted(
                (t for t in assigned if str(assigned[t].agent_id) == agent),
                key=lambda t: assigned[t].assigned_at,
            )
            for agent in team.specialists
        }
        dequeued = drain(client, tap, team, holding, queued)

        assert [s.data.ticket_id for s in dequeued] == queue_order(queued, created), (
            "the queue drained out of order"
        )
        assert {s.data.team_id for s in tap.unique(TicketAssigned)} == {uuid.UUID(team.id)}
        ranks = [Priority(queued[s.data.ticket_id].priority).rank for s in dequeued]
        assert ranks == sorted(ranks, reverse=True)
        assert active_tickets(routing) == expected_load(team, CAPACITY, len(COMPLAINTS_AT))
        assert all(len(t) == CAPACITY for t in holding.values())

        with_lead = {t for t, a in assigned.items() if str(a.agent_id) == team.lead_id}

        def intake_agrees() -> bool:
            return all(
                {uuid.UUID(t["id"]) for t in intake_tickets(client, assignee_id=agent, status="assigned")}
                == set(held)
                for agent, held in holding.items()
            ) and {
                uuid.UUID(t["id"]) for t in intake_tickets(client, team_id=team.id, status="assigned")
            } == (with_lead.union(*holding.values()))

        eventually(intake_agrees, within=10.0, interval=0.2)

    assert sampler.samples >= 50, f"only {sampler.samples} samples of GET /v1/agents"
    assert sampler.over_capacity == [], "an agent was seen above capacity"
    assert {a: sampler.peak[a] for a in team.specialists} == dict.fromkeys(team.specialists, CAPACITY)
    assert sampler.peak[team.lead_id] == len(COMPLAINTS_AT)


def expected_load(team: Team, per_specialist: int, lead: int) -> dict[str, int]:
    return {team.lead_id: lead} | dict.fromkeys(team.specialists, per_specialist)


def first_decisions(
    tap: EventTap, ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, TicketAssigned], dict[uuid.UUID, TicketQueued]]:
    """Exactly one decision per ticket (distinct event ids), split into assigned and queued."""
    decisions = tap.by_ticket(TicketAssigned, TicketQueued)
    several = {t: [s.type for s in decisions[t]] for t in ids if len(decisions[t]) != 1}
    assert several == {}, "tickets with more than one routing decision"
    assigned = {t: decisions[t][0].data for t in ids if decisions[t][0].type == ASSIGNED}
    queued = {t: decisions[t][0].data for t in ids if decisions[t][0].type != ASSIGNED}
    return assigned, queued


def announced(tap: EventTap, tickets: Iterable[uuid.UUID]) -> dict[uuid.UUID, TicketCreated]:
    """The ``ticket.created`` of each ticket, as routing read it from intake's topic."""
    wanted = set(tickets)

    def found(t: EventTap) -> dict[uuid.UUID, TicketCreated] | None:
        created = {
            ticket: seen[0].data for ticket, seen in t.by_ticket(TicketCreated).items() if ticket in wanted
        }
        return created if created.keys() == wanted else None

    result: dict[uuid.UUID, TicketCreated] = tap.wait(found, within=10, what="ticket.created of the queued")
    return result


def check_intake_phase(
    team: Team,
    body: dict[uuid.UUID, dict[str, Any]],
    assigned: dict[uuid.UUID, TicketAssigned],
    queued: dict[uuid.UUID, TicketQueued],
) -> None:
    complaints = {t for t, b in body.items() if b["kind"] == "complaint"}
    with_lead = {t for t, a in assigned.items() if str(a.agent_id) == team.lead_id}
    assert with_lead == complaints, "difficult tickets (complaints) must land with the lead, and only they"
    assert all(assigned[t].difficult for t in complaints)

    per_agent = Counter(str(a.agent_id) for t, a in assigned.items() if t not in complaints)
    assert per_agent == dict.fromkeys(team.specialists, CAPACITY), "specialists not filled to exactly 3"
    assert len(queued) == TICKETS - SPECIALISTS * CAPACITY - len(complaints)
    assert all(q.priority == body[t]["priority"] for t, q in queued.items())
    # Work-conserving: nothing was queued while a specialist still had a free slot.
    last_fill = max(a.assigned_at for t, a in assigned.items() if t not in complaints)
    assert min(q.queued_at for q in queued.values()) >= last_fill


def drain(
    client: httpx.Client,
    tap: EventTap,
    team: Team,
    holding: dict[str, list[uuid.UUID]],
    queued: dict[uuid.UUID, TicketQueued],
) -> list[Seen]:
    """Resolve one ticket at a time (round robin over the specialists) until the queue is empty.

    Each resolution frees exactly one slot, on an agent who was at capacity while everyone else
    was too, so the queue's head must be assigned to that agent, in the same transaction.
    Replaying these assignments against the resolutions gives every agent's load at every step.
    """

    def dequeues(t: EventTap) -> list[Seen]:
        return [s for s in t.unique(TicketAssigned) if s.data.ticket_id in queued]

    dequeued: list[Seen] = []
    turn = itertools.cycle(team.specialists)
    while len(dequeued) < len(queued):
        agent = next(turn)
        resolve_as_assignee(client, holding[agent].pop(0), agent)
        step = len(dequeued)
        new = tap.wait(
            lambda t, step=step: dequeues(t)[step:], within=10, what=f"the dequeue after resolution #{step}"
        )
        assert len(new) == 1, f"one resolution freed one slot but {len(new)} tickets were dequeued"
        event = new[0].data
        assert str(event.agent_id) == agent, "the freed slot went to an agent who had no free slot"
        holding[agent].append(event.ticket_id)
        assert len(holding[agent]) <= CAPACITY
        dequeued.extend(new)
    return dequeued
