"""Transfers (不得私自轉接), who may and to whom.

* The target is an active agent (else 422) other than the assignee (409) who can work the ticket —
  a specialist or lead holding its domain and speaking its language (else 403) — unless it is a
  lead answerable for the ticket; online (409) with a free slot (409: never over capacity).
* The same target rules whoever transfers: the assignee, a lead or an admin.
* A lead may transfer only tickets of their team or domain (the lead of the assignee's team or of
  the ticket's domain team); admins any. The same scope for changing collaborators.
* The caller's right is checked first: an agent who does not hold the ticket gets 403 whether it
  is unknown, queued or someone else's; only leads and admins may learn it is not assigned (404).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from routing_factories import (
    agent,
    consume,
    domain_rule,
    is_queued,
    isolated_team,
    owner_of,
    team,
    ticket_created,
)
from sqlalchemy import func, select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from routing_service.models import Agent, Transfer


@dataclass
class Desk:
    ticket_id: uuid.UUID
    domain: str
    owner: str
    lead: str
    """Leads the owner's team."""
    team_id: str
    keyword: str


async def desk(routing: ServiceHarness) -> Desk:
    """An isolated team: its lead (lead role only) and the owner, a specialist in a domain of the
    test's own speaking zh, who holds a zh-TW ticket of that domain."""
    await isolated_team(routing)
    domain = f"車險-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead = await agent(routing, name="組長", roles=["lead"], domains=[], max_concurrent=2)
    team_id = await team(routing, lead_id=lead)
    owner = await agent(routing, name="持有人", team_id=team_id, domains=[domain], languages=["zh"])
    event = ticket_created(subject=f"{keyword} 理賠", language="zh-TW")
    await consume(routing, event)
    assert await owner_of(routing, event.data.ticket_id) == owner
    return Desk(event.data.ticket_id, domain, owner, lead, team_id, keyword)


async def transfer(
    routing: ServiceHarness, ticket_id: uuid.UUID | str, by: str, to: str, *roles: str
) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer",
        headers=auth_headers(*(roles or ("agent",)), sub=by),
        json={"to_agent_id": to, "reason": "需要轉接"},
    )
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code, response.json()


def slug(body: dict) -> str:  # type: ignore[type-arg]
    return str(body["type"]).rsplit("/", 1)[-1]


async def audited(routing: ServiceHarness, ticket_id: uuid.UUID) -> int:
    async with routing.uow() as uow:
        return int(
            await uow.session.scalar(
                select(func.count()).select_from(Transfer).where(Transfer.ticket_id == ticket_id)
            )
            or 0
        )


async def test_the_target_must_be_able_to_work_the_ticket_whoever_transfers(routing: ServiceHarness) -> None:
    d = await desk(routing)
    reviewer_only = await agent(routing, roles=["reviewer"], domains=[d.domain], languages=["zh"])
    english_only = await agent(routing, domains=[d.domain], languages=["en"])
    unskilled = await agent(routing, domains=["壽險"], languages=["zh"])

    for by, roles in ((d.owner, ("agent",)), (d.lead, ("lead",)), (str(uuid.uuid4()), ("admin",))):
        status, body = await transfer(routing, d.ticket_id, by, reviewer_only, *roles)
        assert (status, slug(body)) == (403, "target-not-qualified"), (roles, body)
        assert "neither a specialist nor a lead" in body["detail"]
        status, body = await transfer(routing, d.ticket_id, by, english_only, *roles)
        assert (status, slug(body)) == (403, "target-not-qualified"), (roles, body)
        assert "zh-TW" in body["detail"]
        status, body = await transfer(routing, d.ticket_id, by, unskilled, *roles)
        assert (status, slug(body)) == (403, "target-not-qualified"), (roles, body)
        assert d.domain in body["detail"]

    assert await owner_of(routing, d.ticket_id) == d.owner
    assert await audited(routing, d.ticket_id) == 0


async def test_unknown_deactivated_same_offline_and_full_targets_are_refused(routing: ServiceHarness) -> None:
    d = await desk(routing)
    offline = await agent(routing, domains=[d.domain], languages=["zh"], presence="offline")
    full = await agent(routing, domains=[d.domain], languages=["zh", "en"], max_concurrent=0)
    removed = await agent(routing, domains=[d.domain], languages=["zh"])
    assert (
        await routing.client.delete(f"/v1/agents/{removed}", headers=auth_headers("admin"))
    ).status_code == 204

    status, body = await transfer(routing, d.ticket_id, d.lead, str(uuid.uuid4()), "lead")
    assert (status, slug(body), body["errors"][0]["field"]) == (
        422,
        "unknown-target-agent",
        "body.to_agent_id",
    )
    status, body = await transfer(routing, d.ticket_id, d.lead, removed, "lead")
    assert (status, slug(body)) == (422, "unknown-target-agent")
    status, _ = await transfer(routing, d.ticket_id, d.lead, d.owner, "lead")
    assert status == 409
    status, body = await transfer(routing, d.ticket_id, d.owner, offline)
    assert (status, slug(body)) == (409, "target-unavailable")
    assert "offline" in body["detail"]
    status, body = await transfer(routing, d.ticket_id, d.lead, full, "lead")
    assert (status, slug(body)) == (409, "target-unavailable")
    assert "at capacity (0 of 0 tickets)" in body["detail"]
    assert "never pushes an agent over capacity" in body["detail"]

    assert await owner_of(routing, d.ticket_id) == d.owner
    assert await audited(routing, d.ticket_id) == 0


async def test_a_qualified_colleague_or_the_responsible_lead_may_be_given_the_ticket(
    routing: ServiceHarness,
) -> None:
    d = await desk(routing)
    colleague = await agent(routing, team_id=d.team_id, domains=[d.domain], languages=["zh-CN"])

    assert (await transfer(routing, d.ticket_id, d.owner, colleague))[0] == 201
    # The team's lead holds neither the domain nor a language: difficult tickets go to them anyway.
    assert (await transfer(routing, d.ticket_id, colleague, d.lead))[0] == 201
    assert await owner_of(routing, d.ticket_id) == d.lead
    assert await audited(routing, d.ticket_id) == 2


async def test_a_lead_transfers_only_tickets_of_their_team_or_domain(routing: ServiceHarness) -> None:
    d = await desk(routing)
    other_lead = await agent(routing, name="別組組長", roles=["lead"], domains=[d.domain], max_concurrent=2)
    await team(routing, lead_id=other_lead)
    lead_of_no_team = await agent(routing, name="無組組長", roles=["lead"], domains=[d.domain])
    colleague = await agent(routing, team_id=d.team_id, domains=[d.domain], languages=["zh"])

    status, body = await transfer(routing, d.ticket_id, other_lead, colleague, "lead")
    assert status == 403, body
    assert "lead of the assignee's team or of the ticket's domain team" in body["detail"]
    assert (await transfer(routing, d.ticket_id, lead_of_no_team, colleague, "lead"))[0] == 403
    assert (await transfer(routing, d.ticket_id, str(uuid.uuid4()), colleague, "lead"))[0] == 403
    assert await audited(routing, d.ticket_id) == 0

    assert (await transfer(routing, d.ticket_id, d.lead, colleague, "lead"))[0] == 201
    assert (await transfer(routing, d.ticket_id, str(uuid.uuid4()), d.owner, "admin"))[0] == 201
    assert await owner_of(routing, d.ticket_id) == d.owner


async def test_the_lead_of_the_tickets_domain_team_may_transfer_it_too(routing: ServiceHarness) -> None:
    d = await desk(routing)
    # A team holding the domain better (levels 5 + 5 against the owner's 3) files it: its lead
    # is the domain's lead, whose team the owner is not in.
    domain_lead = await agent(routing, name="領域組長", roles=["lead"], domains=[], max_concurrent=1)
    domain_team = await team(routing, lead_id=domain_lead)
    for _ in range(2):
        await agent(
            routing, team_id=domain_team, domains=[d.domain], skill_levels={d.domain: 5}, presence="offline"
        )
    colleague = await agent(routing, domains=[d.domain], languages=["zh"])

    status, body = await transfer(routing, d.ticket_id, domain_lead, colleague, "lead")

    assert status == 201, body
    assert body["requested_by"] == domain_lead


async def test_the_callers_right_is_checked_before_the_ticket_is_looked_up(routing: ServiceHarness) -> None:
    d = await desk(routing)
    stranger = await agent(routing, domains=[d.domain], languages=["zh"])
    queued = ticket_created(subject=f"{d.keyword} 保單", language="zh")
    async with routing.uow() as uow:  # nobody free: it waits
        await uow.session.execute(Agent.__table__.update().values(presence="offline"))
        await uow.commit()
    await consume(routing, queued)
    assert await is_queued(routing, queued.data.ticket_id)

    answers = [
        await transfer(routing, ticket, stranger, stranger)
        for ticket in (uuid.uuid4(), queued.data.ticket_id, d.ticket_id)
    ]
    assert [status for status, _ in answers] == [403, 403, 403]
    assert len({body["detail"] for _, body in answers}) == 1  # nothing to tell them apart
    # A lead of no team is no lead here.
    assert (await transfer(routing, uuid.uuid4(), str(uuid.uuid4()), stranger, "lead"))[0] == 403

    status, body = await transfer(routing, uuid.uuid4(), d.lead, stranger, "lead")
    assert (status, slug(body)) == (404, "ticket-not-assigned")
    assert (await transfer(routing, queued.data.ticket_id, str(uuid.uuid4()), stranger, "admin"))[0] == 404


async def test_only_a_lead_of_the_tickets_team_or_domain_changes_its_collaborators(
    routing: ServiceHarness,
) -> None:
    d = await desk(routing)
    helper = await agent(routing, domains=[d.domain])
    other_lead = await agent(routing, name="別組組長", roles=["lead"], max_concurrent=2)
    await team(routing, lead_id=other_lead)
    url = f"/v1/tickets/{d.ticket_id}/collaborators/{helper}"

    by_other_lead = await routing.client.put(url, headers=auth_headers("lead", sub=other_lead))
    by_lead_of_nothing = await routing.client.put(url, headers=auth_headers("lead"))
    unknown_by_lead_of_nothing = await routing.client.put(
        f"/v1/tickets/{uuid.uuid4()}/collaborators/{helper}", headers=auth_headers("lead")
    )
    assert [r.status_code for r in (by_other_lead, by_lead_of_nothing, unknown_by_lead_of_nothing)] == [
        403,
        403,
        403,
    ]
    added = await routing.client.put(url, headers=auth_headers("lead", sub=d.lead))
    assert added.status_code == 200, added.text
    removed_by_other = await routing.client.delete(url, headers=auth_headers("lead", sub=other_lead))
    assert removed_by_other.status_code == 403
    assert removed_by_other.headers["content-type"] == "application/problem+json"
    shown = await routing.client.get(
        f"/v1/tickets/{d.ticket_id}/collaborators", headers=auth_headers("agent")
    )
    assert [c["agent_id"] for c in shown.json()["collaborators"]] == [helper]
    assert (await routing.client.delete(url, headers=auth_headers("admin"))).status_code == 204
