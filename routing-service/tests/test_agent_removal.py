"""Removing agents and teams, and the `agent.status_changed` of new agents and team moves.

* `DELETE /v1/agents/{id}` deactivates: the row stays (history names it) but the agent is offline
  for good, in no team, holds nothing — every ticket, worked on or not, goes back to the queue and
  on to whoever is free (difficult ones to their lead) — helps on nothing, is left out of the list
  unless asked for, cannot be edited, set online, given tickets or made a lead (409/422). A second
  DELETE changes nothing (204). A team's lead is not removed (409). The tickets handed back say
  why: their `ticket.queued` reason is "agent removed", not the offline hand-back's.
* `DELETE /v1/teams/{id}`: 409 while agents belong to it, else deleted (a second time: 404).
* A new agent is announced, and so is an agent's move to another team.
"""

from __future__ import annotations

import uuid
from typing import Any

from routing_factories import (
    ADMIN,
    LEAD,
    agent,
    answer_submitted,
    consume,
    domain_rule,
    is_queued,
    isolated_team,
    load_of,
    owner_of,
    published,
    team,
    ticket_created,
)
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import TicketKind
from routing_service.models import TicketCollaborator
from routing_service.presence import REMOVED_REASON

STATUS_CHANGED = "helpdesk.agent.status_changed.v1"
QUEUED = "helpdesk.ticket.queued.v1"
ASSIGNED = "helpdesk.ticket.assigned.v1"
COLLABORATORS_CHANGED = "helpdesk.ticket.collaborators_changed.v1"


def slug(response: Any) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return str(response.json()["type"]).rsplit("/", 1)[-1]


async def listed_ids(routing: ServiceHarness, **params: Any) -> set[str]:
    """Every agent id `GET /v1/agents` lists, following the pages."""
    ids: set[str] = set()
    cursor = None
    while True:
        query = {"limit": 200, **params} | ({"cursor": cursor} if cursor else {})
        response = await routing.client.get("/v1/agents", headers=LEAD, params=query)
        assert response.status_code == 200, response.text
        ids |= {a["id"] for a in response.json()["items"]}
        cursor = response.json()["next_cursor"]
        if not cursor:
            return ids


async def test_removing_an_agent_hands_back_all_their_tickets_and_keeps_the_row(
    routing: ServiceHarness,
) -> None:
    leaving, staying = await isolated_team(routing, 3, 3)
    team_id = (await routing.client.get(f"/v1/agents/{leaving}", headers=ADMIN)).json()["team_id"]
    await routing.client.put(f"/v1/agents/{staying}/presence", headers=LEAD, json={"presence": "away"})
    worked_on, untouched = ticket_created(), ticket_created()
    for event in (worked_on, untouched):
        await consume(routing, event)
        assert await owner_of(routing, event.data.ticket_id) == leaving
    await consume(routing, answer_submitted(worked_on.data.ticket_id, leaving))
    await routing.client.put(f"/v1/agents/{staying}/presence", headers=LEAD, json={"presence": "online"})
    helped = ticket_created()
    await consume(routing, helped)
    assert await owner_of(routing, helped.data.ticket_id) == staying
    added = await routing.client.put(
        f"/v1/tickets/{helped.data.ticket_id}/collaborators/{leaving}", headers=ADMIN
    )
    assert added.status_code == 200, added.text
    announced_before = len(await published(routing, leaving, STATUS_CHANGED))

    removed = await routing.client.delete(f"/v1/agents/{leaving}", headers=LEAD)

    assert removed.status_code == 204, removed.text
    for event in (worked_on, untouched):  # worked on or not: a removed agent works nothing
        assert await owner_of(routing, event.data.ticket_id) == staying
    assert (await load_of(routing, leaving), await load_of(routing, staying)) == (0, 3)
    async with routing.uow() as uow:
        assert (
            await uow.session.execute(
                select(TicketCollaborator).where(TicketCollaborator.agent_id == uuid.UUID(leaving))
            )
        ).first() is None
    collaborator_changes = await published(routing, str(helped.data.ticket_id), COLLABORATORS_CHANGED)
    assert [c["collaborator_ids"] for c in collaborator_changes] == [[leaving], []]
    statuses = await published(routing, leaving, STATUS_CHANGED)
    assert len(statuses) == announced_before + 1
    assert (statuses[-1]["presence"], statuses[-1]["previous_presence"]) == ("offline", "online")
    assert (statuses[-1]["active_tickets"], statuses[-1]["team_id"]) == (0, team_id)

    shown = await routing.client.get(f"/v1/agents/{leaving}", headers=LEAD)
    assert shown.status_code == 200  # kept for history
    assert shown.json()["deactivated_at"] is not None
    assert (shown.json()["presence"], shown.json()["team_id"]) == ("offline", None)
    assert leaving not in await listed_ids(routing)
    assert leaving in await listed_ids(routing, include_inactive="true")
    assert staying in await listed_ids(routing)

    rejoined = await routing.client.put(
        f"/v1/tickets/{helped.data.ticket_id}/collaborators/{leaving}", headers=ADMIN
    )
    assert (rejoined.status_code, slug(rejoined)) == (422, "unknown-collaborator")

    again = await routing.client.delete(f"/v1/agents/{leaving}", headers=ADMIN)
    assert again.status_code == 204  # idempotent: nothing more happens
    assert len(await published(routing, leaving, STATUS_CHANGED)) == announced_before + 1


async def test_a_removed_agent_is_not_edited_set_online_or_given_work(routing: ServiceHarness) -> None:
    (removed,) = await isolated_team(routing, 3)
    assert (await routing.client.delete(f"/v1/agents/{removed}", headers=ADMIN)).status_code == 204

    patched = await routing.client.patch(f"/v1/agents/{removed}", headers=LEAD, json={"max_concurrent": 9})
    online = await routing.client.put(
        f"/v1/agents/{removed}/presence",
        headers=auth_headers("agent", sub=removed),
        json={"presence": "online"},
    )
    away = await routing.client.put(f"/v1/agents/{removed}/presence", headers=LEAD, json={"presence": "away"})
    offline = await routing.client.put(
        f"/v1/agents/{removed}/presence", headers=LEAD, json={"presence": "offline"}
    )
    someone_elses = await routing.client.put(
        f"/v1/agents/{removed}/presence", headers=auth_headers("agent"), json={"presence": "online"}
    )
    assert [r.status_code for r in (patched, online, away, offline)] == [409, 409, 409, 409]
    assert {slug(r) for r in (patched, online, away, offline)} == {"agent-deactivated"}
    assert someone_elses.status_code == 403  # as for any agent: no probing
    led = await routing.client.post(
        "/v1/teams", headers=ADMIN, json={"name": f"t-{uuid.uuid4()}", "lead_id": removed}
    )
    made_lead = await routing.client.patch(
        f"/v1/teams/{await team(routing)}", headers=LEAD, json={"lead_id": removed}
    )
    assert [(r.status_code, slug(r)) for r in (led, made_lead)] == [(422, "unknown-agent")] * 2

    event = ticket_created()
    await consume(routing, event)
    assert await is_queued(routing, event.data.ticket_id)  # nobody else is online; they take nothing
    shown = (await routing.client.get(f"/v1/agents/{removed}", headers=LEAD)).json()
    assert (shown["presence"], shown["max_concurrent"], shown["active_tickets"]) == ("offline", 3, 0)


async def test_removal_problems(routing: ServiceHarness) -> None:
    lead = await agent(routing, roles=["lead"])
    team_name = f"組-{uuid.uuid4()}"
    await routing.client.post("/v1/teams", headers=ADMIN, json={"name": team_name, "lead_id": lead})
    specialist = await agent(routing)

    unknown = await routing.client.delete(f"/v1/agents/{uuid.uuid4()}", headers=ADMIN)
    by_agent = await routing.client.delete(f"/v1/agents/{specialist}", headers=auth_headers("agent"))
    by_themself = await routing.client.delete(
        f"/v1/agents/{specialist}", headers=auth_headers("agent", sub=specialist)
    )
    a_lead = await routing.client.delete(f"/v1/agents/{lead}", headers=ADMIN)
    malformed = await routing.client.delete("/v1/agents/not-an-id", headers=ADMIN)

    assert [r.status_code for r in (unknown, by_agent, by_themself, a_lead, malformed)] == [
        404,
        403,
        403,
        409,
        422,
    ]
    assert slug(a_lead) == "agent-leads-team"
    assert team_name in a_lead.json()["detail"]
    assert (await routing.client.get(f"/v1/agents/{lead}", headers=ADMIN)).json()["deactivated_at"] is None


async def test_a_removed_agents_difficult_ticket_goes_to_the_lead(routing: ServiceHarness) -> None:
    await isolated_team(routing)
    domain = f"疑難-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead = await agent(routing, name="組長", roles=["lead"], domains=[], max_concurrent=2, presence="away")
    team_id = await team(routing, lead_id=lead)
    specialist = await agent(routing, team_id=team_id, domains=[domain])
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")
    await consume(routing, complaint)  # the lead is away: the specialist takes it
    assert await owner_of(routing, complaint.data.ticket_id) == specialist
    await routing.client.put(f"/v1/agents/{lead}/presence", headers=LEAD, json={"presence": "online"})

    assert (await routing.client.delete(f"/v1/agents/{specialist}", headers=ADMIN)).status_code == 204

    assert await owner_of(routing, complaint.data.ticket_id) == lead


async def test_a_team_is_deleted_once_nobody_belongs_to_it(routing: ServiceHarness) -> None:
    lead = await agent(routing, roles=["lead"], presence="offline")
    team_id = await team(routing, lead_id=lead)
    member = await agent(routing, team_id=team_id, presence="offline")

    busy = await routing.client.delete(f"/v1/teams/{team_id}", headers=LEAD)
    by_agent = await routing.client.delete(f"/v1/teams/{team_id}", headers=auth_headers("agent"))
    assert (busy.status_code, slug(busy), by_agent.status_code) == (409, "team-not-empty", 403)
    assert "1 agent" in busy.json()["detail"]

    assert (await routing.client.delete(f"/v1/agents/{member}", headers=ADMIN)).status_code == 204
    deleted = await routing.client.delete(f"/v1/teams/{team_id}", headers=LEAD)
    again = await routing.client.delete(f"/v1/teams/{team_id}", headers=LEAD)

    assert deleted.status_code == 204, deleted.text
    assert (again.status_code, slug(again)) == (404, "team-not-found")
    assert team_id not in {t["id"] for t in (await routing.client.get("/v1/teams", headers=LEAD)).json()}
    # Its lead is an agent like any other now, and may be removed.
    assert (await routing.client.delete(f"/v1/agents/{lead}", headers=ADMIN)).status_code == 204
    joined = await routing.client.post(
        "/v1/agents", headers=ADMIN, json={"name": "新人", "roles": ["specialist"], "team_id": team_id}
    )
    assert (joined.status_code, slug(joined)) == (422, "team-not-found")


async def test_new_agents_and_team_moves_are_announced(routing: ServiceHarness) -> None:
    await isolated_team(routing)  # an empty queue: the new agent takes nothing
    first_team, second_team = await team(routing), await team(routing)
    online = await agent(routing, team_id=first_team, max_concurrent=4)
    offline = await agent(routing, presence="offline")

    (created,) = await published(routing, online, STATUS_CHANGED)
    assert (created["presence"], created["previous_presence"], created["team_id"]) == (
        "online",
        None,
        first_team,
    )
    assert (created["max_concurrent"], created["active_tickets"]) == (4, 0)
    (created_offline,) = await published(routing, offline, STATUS_CHANGED)
    assert (created_offline["presence"], created_offline["previous_presence"]) == ("offline", None)

    moved = await routing.client.patch(f"/v1/agents/{online}", headers=LEAD, json={"team_id": second_team})
    assert moved.status_code == 200, moved.text
    left = await routing.client.patch(f"/v1/agents/{online}", headers=LEAD, json={"team_id": None})
    assert left.status_code == 200, left.text
    renamed = await routing.client.patch(f"/v1/agents/{online}", headers=LEAD, json={"name": "改名"})
    assert renamed.status_code == 200

    changes = await published(routing, online, STATUS_CHANGED)
    assert [(c["team_id"], c["previous_presence"], c["presence"]) for c in changes] == [
        (first_team, None, "online"),
        (second_team, "online", "online"),
        (None, "online", "online"),
    ]


async def test_tickets_handed_back_by_a_removal_say_the_agent_was_removed(routing: ServiceHarness) -> None:
    leaving, staying = await isolated_team(routing, 3, 3)
    await routing.client.put(f"/v1/agents/{staying}/presence", headers=LEAD, json={"presence": "away"})
    worked_on, untouched = ticket_created(), ticket_created()
    for event in (worked_on, untouched):
        await consume(routing, event)
    await consume(routing, answer_submitted(worked_on.data.ticket_id, leaving))
    await routing.client.put(f"/v1/agents/{staying}/presence", headers=LEAD, json={"presence": "online"})

    assert (await routing.client.delete(f"/v1/agents/{leaving}", headers=ADMIN)).status_code == 204

    for event in (worked_on, untouched):
        ticket_id = str(event.data.ticket_id)
        (queued,) = await published(routing, ticket_id, QUEUED)
        assert queued["reason"] == REMOVED_REASON
        assert "offline" not in queued["reason"]
        assigned = await published(routing, ticket_id, ASSIGNED)
        assert [a["agent_id"] for a in assigned] == [leaving, staying]
