"""Skill match with languages: domain + language, then domain, then anyone — new and queued tickets."""

from __future__ import annotations

import uuid

from routing_factories import (
    agent,
    consume,
    domain_rule,
    is_queued,
    isolated_team,
    owner_of,
    published,
    ticket_created,
)
from sqlalchemy import select, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from routing_service.models import Agent, Assignment, QueueEntry

ASSIGNED = "helpdesk.ticket.assigned.v1"


async def reason(routing: ServiceHarness, ticket_id: uuid.UUID) -> str:
    (assigned,) = await published(routing, str(ticket_id), ASSIGNED)
    text: str = assigned["reason"]
    return text


async def test_domain_and_language_first_then_domain_then_anyone(routing: ServiceHarness) -> None:
    await isolated_team(routing)
    keyword = await domain_rule(routing, "車險")
    chinese = await agent(routing, domains=["車險"], languages=["zh"], max_concurrent=3)
    english = await agent(routing, domains=["車險"], languages=["en"], max_concurrent=1)
    generalist = await agent(routing, domains=[], languages=["en"], max_concurrent=3)

    in_english = ticket_created(subject=f"{keyword} claim", language="en-GB")
    in_chinese = ticket_created(subject=f"{keyword} 理賠", language="zh-TW")
    english_again = ticket_created(subject=f"{keyword} claim", language="en")
    no_domain = ticket_created(language="en")
    for event in (in_english, in_chinese, english_again, no_domain):
        await consume(routing, event)

    assert await owner_of(routing, in_english.data.ticket_id) == english  # primary subtag "en" matches en-GB
    assert (
        await reason(routing, in_english.data.ticket_id)
        == "least-loaded online specialist in 車險 speaking en-GB"
    )
    assert await owner_of(routing, in_chinese.data.ticket_id) == chinese
    # The English specialist is full: the domain beats the language.
    assert await owner_of(routing, english_again.data.ticket_id) == chinese
    assert await reason(routing, english_again.data.ticket_id) == "least-loaded online specialist in 車險"
    assert await owner_of(routing, no_domain.data.ticket_id) == generalist
    assert await reason(routing, no_domain.data.ticket_id) == "least-loaded online specialist"
    async with routing.uow() as uow:
        stored = (
            await uow.session.execute(
                select(Assignment.domain, Assignment.language).where(
                    Assignment.ticket_id == in_english.data.ticket_id
                )
            )
        ).one()
    assert tuple(stored) == ("車險", "en-GB")


async def test_the_queue_drains_by_the_queued_tickets_domain_and_language(routing: ServiceHarness) -> None:
    await isolated_team(routing)
    keyword = await domain_rule(routing, "壽險")
    generalist = await agent(routing, domains=[], languages=["zh"], max_concurrent=3)
    specialist = await agent(routing, domains=["壽險"], languages=["zh"], max_concurrent=3)
    filler = ticket_created(subject=f"{keyword} 保單")
    await consume(routing, filler)  # loads the specialist: least load alone would now pick the generalist
    assert await owner_of(routing, filler.data.ticket_id) == specialist
    for agent_id in (generalist, specialist):
        response = await routing.client.put(
            f"/v1/agents/{agent_id}/presence",
            headers=auth_headers("agent", sub=agent_id),
            json={"presence": "away"},
        )
        assert response.status_code == 200
    waiting = ticket_created(subject=f"{keyword} 受益人變更", language="zh-CN")
    await consume(routing, waiting)
    async with routing.uow() as uow:
        entry = (
            await uow.session.execute(
                select(QueueEntry.domain, QueueEntry.language).where(
                    QueueEntry.ticket_id == waiting.data.ticket_id
                )
            )
        ).one()
        # Back without draining, so that the specialist's return finds both free at once.
        await uow.session.execute(
            update(Agent).where(Agent.id == uuid.UUID(generalist)).values(presence="online")
        )
        await uow.commit()
    assert tuple(entry) == ("壽險", "zh-CN")

    response = await routing.client.put(
        f"/v1/agents/{specialist}/presence",
        headers=auth_headers("agent", sub=specialist),
        json={"presence": "online"},
    )

    assert response.status_code == 200
    assert not await is_queued(routing, waiting.data.ticket_id)
    assert await owner_of(routing, waiting.data.ticket_id) == specialist
    assert await reason(routing, waiting.data.ticket_id) == "dequeued: capacity freed"
