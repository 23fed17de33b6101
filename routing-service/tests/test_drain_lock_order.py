"""Concurrent drains take the agents' rows in id order, so they never deadlock each other.

Two replicas drain at once (resolutions on different partitions) with tickets of two domains
queued: each drain offers its ticket first to the agent holding the ticket's domain. Taking each
agent's row as its ticket's ranking came, the first drain held A and waited for B while the second
held B and waited for A — PostgreSQL aborted one of them (a failed event, an HTTP 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from routing_factories import agent, consume, domain_rule, isolated_team, load_of, owner_of, ticket_created

from helpdesk_runtime.testing import ServiceHarness
from routing_service import capacity
from routing_service.models import Agent
from routing_service.repository import RoutingRepository


async def test_concurrent_drains_of_tickets_ranked_differently_do_not_deadlock(
    routing: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await isolated_team(routing)
    domains = [f"d-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    keywords = [await domain_rule(routing, domain) for domain in domains]
    a, b = [await agent(routing, domains=[domain], max_concurrent=2, presence="away") for domain in domains]
    # Queued (nobody online) in this order: A's domain, B's, B's, A's.
    tickets = [ticket_created(subject=f"{keywords[i]} 問題") for i in (0, 1, 1, 0)]
    for event in tickets:
        await consume(routing, event)
    async with routing.uow() as uow:  # both back at once, without the drain going online runs
        await uow.session.execute(
            Agent.__table__.update()
            .where(Agent.id.in_([uuid.UUID(a), uuid.UUID(b)]))
            .values(presence="online")
        )
        await uow.commit()

    # Each drain, once it assigned its first ticket, waits (a while) for the other to have done so.
    assign_first_free = capacity.assign_first_free
    paused: set[int] = set()
    both = asyncio.Event()

    async def pausing(uow: Any, *args: Any, **kwargs: Any) -> Any:
        taken = await assign_first_free(uow, *args, **kwargs)
        if taken is not None and id(uow) not in paused:
            paused.add(id(uow))
            if len(paused) == 2:
                both.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(both.wait(), timeout=2)
        return taken

    monkeypatch.setattr(capacity, "assign_first_free", pausing)

    async def drain() -> int:
        async with routing.uow() as uow:
            assigned = await capacity.drain_queue(uow, RoutingRepository(uow.session), datetime.now(UTC))
            await uow.commit()
        return assigned

    counts = await asyncio.wait_for(asyncio.gather(drain(), drain()), timeout=30)

    assert sum(counts) == 4
    assert (await load_of(routing, a), await load_of(routing, b)) == (2, 2)
    assert all([await owner_of(routing, event.data.ticket_id) for event in tickets])
