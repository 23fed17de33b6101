"""Read views for leads and dashboards: queue depth by team and priority, and agent workload."""

from __future__ import annotations

import uuid
from datetime import datetime

from routing_factories import (
    LEAD,
    agent,
    answer_submitted,
    consume,
    domain_rule,
    isolated_team,
    published,
    team,
    ticket_created,
)

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import Priority

AGENT = auth_headers("agent")


async def test_queue_depth_by_team_and_priority(routing: ServiceHarness) -> None:
    await isolated_team(routing)
    keyword = await domain_rule(routing, "年金")
    unknown_domain = await domain_rule(routing, "無人懂的險種")
    weaker, stronger = await team(routing), await team(routing)
    # Nobody has a free slot: everything queues. The stronger team holds the domain best.
    await agent(routing, team_id=weaker, domains=["年金"], skill_levels={"年金": 2}, max_concurrent=0)
    await agent(routing, team_id=stronger, domains=["年金"], skill_levels={"年金": 5}, max_concurrent=0)
    tickets = [
        ticket_created(subject=f"{keyword} 領取", priority=Priority.URGENT),
        ticket_created(subject=f"{keyword} 試算"),
        ticket_created(subject=f"{keyword} 退保"),
        ticket_created(subject=f"{unknown_domain} 問題", priority=Priority.LOW),
        ticket_created(priority=Priority.HIGH),
    ]
    for event in tickets:
        await consume(routing, event)

    response = await routing.client.get("/v1/queues", headers=AGENT)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["depth"] == 5
    assert body["oldest_wait_seconds"] >= 0
    assert datetime.fromisoformat(body["oldest_queued_at"]) <= datetime.fromisoformat(body["as_of"])
    by_team = {t["team_id"]: t for t in body["teams"]}
    assert set(by_team) == {stronger, None}
    assert by_team[stronger]["depth"] == 3
    assert by_team[stronger]["by_priority"] == {"urgent": 1, "high": 0, "normal": 2, "low": 0}
    assert by_team[stronger]["team_name"] is not None
    assert by_team[None]["by_priority"] == {"urgent": 0, "high": 1, "normal": 0, "low": 1}
    assert by_team[None]["team_name"] is None
    assert body["teams"][0]["team_id"] == stronger  # deepest first
    (queued,) = await published(routing, str(tickets[0].data.ticket_id), "helpdesk.ticket.queued.v1")
    assert queued["team_id"] == stronger
    assert (await routing.client.get("/v1/queues", headers=auth_headers("channel"))).status_code == 403
    assert (await routing.client.get("/v1/queues")).status_code == 401


async def test_the_workload_of_an_agent_and_of_everyone(routing: ServiceHarness) -> None:
    (agent_id,) = await isolated_team(routing, 4)
    first, second = ticket_created(), ticket_created()
    for event in (first, second):
        await consume(routing, event)
    await consume(routing, answer_submitted(first.data.ticket_id, agent_id))

    response = await routing.client.get(f"/v1/agents/{agent_id}/workload", headers=AGENT)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["agent_id"], body["presence"], body["active_tickets"], body["max_concurrent"]) == (
        agent_id,
        "online",
        2,
        4,
    )
    assert body["utilisation"] == 0.5
    assigned = {a["ticket_id"]: a for a in body["assignments"]}
    assert set(assigned) == {str(first.data.ticket_id), str(second.data.ticket_id)}
    assert assigned[str(first.data.ticket_id)]["touched"] is True
    assert assigned[str(first.data.ticket_id)]["touched_at"] is not None
    assert assigned[str(second.data.ticket_id)]["touched"] is False
    assert all(a["assigned_at"] and a["reason"] for a in body["assignments"])

    team_id = (await routing.client.get(f"/v1/agents/{agent_id}", headers=LEAD)).json()["team_id"]
    everyone = await routing.client.get("/v1/workload", headers=LEAD, params={"team_id": team_id})
    assert everyone.status_code == 200, everyone.text
    assert [w["agent_id"] for w in everyone.json()["items"]] == [agent_id]
    assert everyone.json()["items"][0] == body
    online = await routing.client.get("/v1/workload", headers=LEAD, params={"presence": "online", "limit": 1})
    assert len(online.json()["items"]) == 1 and online.json()["next_cursor"] is None
    offline = await routing.client.get(
        "/v1/workload", headers=LEAD, params={"presence": "offline", "limit": 1}
    )
    assert (
        len(offline.json()["items"]) == 1 and offline.json()["next_cursor"] is not None
    )  # earlier tests' agents

    assert (await routing.client.get(f"/v1/agents/{uuid.uuid4()}/workload", headers=AGENT)).status_code == 404
    assert (await routing.client.get("/v1/workload", headers=auth_headers("channel"))).status_code == 403
    bad = await routing.client.get("/v1/workload", headers=AGENT, params={"presence": "busy"})
    assert bad.status_code == 422
    assert (
        await routing.client.get("/v1/workload", headers=AGENT, params={"cursor": "???"})
    ).status_code == 422


async def test_a_capacity_of_zero_has_no_utilisation(routing: ServiceHarness) -> None:
    (agent_id,) = await isolated_team(routing, 0)
    body = (await routing.client.get(f"/v1/agents/{agent_id}/workload", headers=AGENT)).json()
    assert (body["utilisation"], body["assignments"]) == (None, [])
