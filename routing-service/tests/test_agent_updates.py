"""Leads edit agents and teams: skills with levels, languages, capacity, schedule; capacity acts at once.

A role, domain or language taken away sends the agent's untouched tickets it covered and no longer
covers back to the queue (a responsible lead keeps theirs; tickets never covered stay).
"""

from __future__ import annotations

import uuid

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
    resolved,
    team,
    team_with_lead,
    ticket_created,
)
from sqlalchemy import update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import TicketKind
from routing_service.models import Agent
from routing_service.service import PROFILE_CHANGED_REASON

STATUS_CHANGED = "helpdesk.agent.status_changed.v1"
QUEUED = "helpdesk.ticket.queued.v1"
SCHEDULE = {"time_zone": "Asia/Shanghai", "weekly_hours": {"0": [["09:00", "12:00"], ["13:30", "18:00"]]}}


async def test_patch_changes_only_the_given_fields(routing: ServiceHarness) -> None:
    first_team, second_team = await team(routing), await team(routing)
    agent_id = await agent(routing, name="李敏", team_id=first_team, domains=["車險"], languages=["zh"])

    response = await routing.client.patch(
        f"/v1/agents/{agent_id}",
        headers=LEAD,
        json={
            "name": "李敏敏",
            "team_id": second_team,
            "roles": ["specialist", "reviewer"],
            "domains": ["車險", "壽險"],
            "skill_levels": {"壽險": 5},
            "languages": ["zh", "en"],
            "schedule": SCHEDULE,
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["team_id"], body["roles"]) == (
        "李敏敏",
        second_team,
        ["specialist", "reviewer"],
    )
    assert body["skill_levels"] == {"車險": 3, "壽險": 5}  # a domain without a level is at level 3
    assert (body["languages"], body["schedule"], body["max_concurrent"]) == (["zh", "en"], SCHEDULE, 3)
    assert (await routing.client.get(f"/v1/agents/{agent_id}", headers=ADMIN)).json() == body

    cleared = await routing.client.patch(
        f"/v1/agents/{agent_id}", headers=ADMIN, json={"team_id": None, "schedule": None, "domains": ["車險"]}
    )
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["team_id"], cleared.json()["schedule"]) == (None, None)
    assert cleared.json()["skill_levels"] == {"車險": 3}  # levels of dropped domains go with them
    assert cleared.json()["name"] == "李敏敏"


async def test_patch_problems(routing: ServiceHarness) -> None:
    agent_id = await agent(routing, domains=["車險"])

    async def patch(body: object, headers: dict[str, str] = LEAD, target: str = agent_id) -> tuple[int, dict]:  # type: ignore[type-arg]
        response = await routing.client.patch(f"/v1/agents/{target}", headers=headers, json=body)
        assert response.headers["content-type"] == "application/problem+json", response.text
        return response.status_code, response.json()

    assert (await patch({"name": "x"}, target=str(uuid.uuid4())))[0] == 404
    assert (await patch({"name": "x"}, headers=auth_headers("agent", sub=agent_id)))[0] == 403
    status, body = await patch({"team_id": str(uuid.uuid4())})
    assert (status, body["type"].rsplit("/", 1)[-1]) == (422, "team-not-found")
    for bad, field in (
        ({"max_concurrent": -1}, "body.max_concurrent"),
        ({"name": None}, "body"),
        ({"roles": []}, "body.roles"),
        ({"skill_levels": {"車險": 6}}, "body.skill_levels.車險"),
        ({"presence": "online"}, "body.presence"),
        (
            {"schedule": {"time_zone": "Mars/Olympus", "weekly_hours": {"0": [["09:00", "18:00"]]}}},
            "body.schedule",
        ),
        (
            {"schedule": {"time_zone": "Asia/Shanghai", "weekly_hours": {"0": [["18:00", "09:00"]]}}},
            "body.schedule",
        ),
    ):
        status, body = await patch(bad)
        assert status == 422, (bad, body)
        assert body["errors"][0]["field"].startswith(field), (bad, body)
    status, body = await patch({"skill_levels": {"壽險": 4}})  # a level for a domain the agent lacks
    assert (status, body["errors"][0]["field"]) == (422, "body.skill_levels.壽險")
    assert (await routing.client.get(f"/v1/agents/{agent_id}", headers=LEAD)).json()["skill_levels"] == {
        "車險": 3
    }


async def test_creating_an_agent_validates_levels_and_schedule(routing: ServiceHarness) -> None:
    created = await routing.client.post(
        "/v1/agents",
        headers=ADMIN,
        json={
            "name": "趙",
            "roles": ["specialist"],
            "domains": ["車險"],
            "skill_levels": {"車險": 1},
            "schedule": SCHEDULE,
        },
    )
    assert created.status_code == 201, created.text
    assert (created.json()["skill_levels"], created.json()["schedule"]) == ({"車險": 1}, SCHEDULE)
    stray = await routing.client.post(
        "/v1/agents", headers=ADMIN, json={"name": "趙", "roles": ["specialist"], "skill_levels": {"車險": 2}}
    )
    assert stray.status_code == 422
    assert stray.json()["errors"][0]["field"] == "body.skill_levels.車險"


async def test_lowering_capacity_stops_new_tickets_and_raising_it_drains_the_queue(
    routing: ServiceHarness,
) -> None:
    (agent_id,) = await isolated_team(routing, 2)
    held = [ticket_created(), ticket_created()]
    for event in held:
        await consume(routing, event)

    lowered = await routing.client.patch(f"/v1/agents/{agent_id}", headers=LEAD, json={"max_concurrent": 1})
    assert lowered.status_code == 200, lowered.text
    assert (lowered.json()["max_concurrent"], lowered.json()["active_tickets"]) == (1, 2)
    waiting = ticket_created()
    await consume(routing, waiting)
    assert await is_queued(routing, waiting.data.ticket_id)
    await consume(routing, resolved(held[0].data.ticket_id))  # 1 of 1: still no free slot
    assert await is_queued(routing, waiting.data.ticket_id)

    raised = await routing.client.patch(f"/v1/agents/{agent_id}", headers=LEAD, json={"max_concurrent": 3})

    assert raised.status_code == 200
    assert await owner_of(routing, waiting.data.ticket_id) == agent_id
    assert raised.json()["active_tickets"] == await load_of(routing, agent_id) == 2
    changes = await published(routing, agent_id, STATUS_CHANGED)
    assert [(c["max_concurrent"], c["presence"], c["previous_presence"]) for c in changes] == [
        (2, "online", None),  # created
        (1, "online", "online"),
        (3, "online", "online"),
    ]
    assert [c["active_tickets"] for c in changes] == [0, 2, 2]  # the last is counted after the drain
    unchanged = await routing.client.patch(f"/v1/agents/{agent_id}", headers=LEAD, json={"name": "改名"})
    assert unchanged.status_code == 200
    assert (
        len(await published(routing, agent_id, STATUS_CHANGED)) == 3
    )  # not a presence, capacity or team change


async def test_a_higher_skill_level_wins_among_equally_loaded_specialists(routing: ServiceHarness) -> None:
    await isolated_team(routing)
    keyword = await domain_rule(routing, "車險")
    novice = await agent(routing, domains=["車險"], skill_levels={"車險": 2})
    expert = await agent(routing, domains=["車險"], skill_levels={"車險": 5})
    owners = []
    for _ in range(3):
        event = ticket_created(subject=f"{keyword} 理賠")
        await consume(routing, event)
        owners.append(await owner_of(routing, event.data.ticket_id))
    # Least load first, then the higher level: expert (0 vs 0), novice (1 vs 0), expert (1 vs 1).
    assert owners == [expert, novice, expert]


async def test_patch_team(routing: ServiceHarness) -> None:
    lead_id = await agent(routing, roles=["lead"])
    team_id = await team(routing)
    taken = await team(routing)
    taken_name = next(
        t["name"] for t in (await routing.client.get("/v1/teams", headers=LEAD)).json() if t["id"] == taken
    )

    renamed = await routing.client.patch(
        f"/v1/teams/{team_id}", headers=LEAD, json={"name": f"新名-{uuid.uuid4()}", "lead_id": lead_id}
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["lead_id"] == lead_id
    cleared = await routing.client.patch(f"/v1/teams/{team_id}", headers=LEAD, json={"lead_id": None})
    assert (cleared.json()["lead_id"], cleared.json()["name"]) == (None, renamed.json()["name"])

    missing = await routing.client.patch(f"/v1/teams/{uuid.uuid4()}", headers=LEAD, json={"name": "x"})
    duplicate = await routing.client.patch(f"/v1/teams/{team_id}", headers=LEAD, json={"name": taken_name})
    unknown_lead = await routing.client.patch(
        f"/v1/teams/{team_id}", headers=LEAD, json={"lead_id": str(uuid.uuid4())}
    )
    null_name = await routing.client.patch(f"/v1/teams/{team_id}", headers=LEAD, json={"name": None})
    by_agent = await routing.client.patch(
        f"/v1/teams/{team_id}", headers=auth_headers("agent"), json={"name": "y"}
    )
    assert [r.status_code for r in (missing, duplicate, unknown_lead, null_name, by_agent)] == [
        404,
        409,
        422,
        422,
        403,
    ]
    assert unknown_lead.json()["errors"][0]["field"] == "body.lead_id"


async def test_a_schedule_stored_under_older_rules_is_still_shown(routing: ServiceHarness) -> None:
    # Input rules tighten over time (intervals of at least 15 minutes, IANA zones only): a schedule
    # saved before is shown as it was, not a 500 on every read of its agent.
    agent_id = await agent(routing, name="周到", domains=["車險"])
    stored = {"time_zone": "localtime", "weekly_hours": {"0": [["09:00", "09:05"]]}}
    async with routing.uow() as uow:
        await uow.session.execute(
            update(Agent).where(Agent.id == uuid.UUID(agent_id)).values(schedule=stored)
        )
        await uow.commit()

    shown = await routing.client.get(f"/v1/agents/{agent_id}", headers=LEAD)
    assert shown.status_code == 200, shown.text
    assert shown.json()["schedule"] == stored
    listed = await routing.client.get("/v1/agents", headers=LEAD, params={"limit": 200})
    assert listed.status_code == 200, listed.text


async def patch_agent(routing: ServiceHarness, agent_id: str, **fields: object) -> dict[str, object]:
    response = await routing.client.patch(f"/v1/agents/{agent_id}", headers=LEAD, json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_removing_a_domain_or_the_role_hands_back_the_untouched_tickets_it_qualified_for(
    routing: ServiceHarness,
) -> None:
    await isolated_team(routing)
    kept, dropped, unheld = (f"域-{uuid.uuid4().hex[:8]}" for _ in range(3))
    keywords = {domain: await domain_rule(routing, domain) for domain in (kept, dropped, unheld)}
    moving = await agent(routing, domains=[kept, dropped], max_concurrent=5)
    colleague = await agent(routing, domains=[dropped], max_concurrent=5, presence="away")
    untouched, worked_on, still_held, never_held = (
        ticket_created(subject=f"{keywords[domain]} 問題") for domain in (dropped, dropped, kept, unheld)
    )
    for event in (untouched, worked_on, still_held, never_held):
        await consume(routing, event)
        assert await owner_of(routing, event.data.ticket_id) == moving
    await consume(routing, answer_submitted(worked_on.data.ticket_id, moving))
    await routing.client.put(f"/v1/agents/{colleague}/presence", headers=LEAD, json={"presence": "online"})

    body = await patch_agent(routing, moving, domains=[kept])

    # Back to the queue, and on to who holds the domain now.
    assert await owner_of(routing, untouched.data.ticket_id) == colleague
    (queued,) = await published(routing, str(untouched.data.ticket_id), QUEUED)
    assert queued["reason"] == PROFILE_CHANGED_REASON
    # Worked on, still held, or never held (given to them as anyone free): theirs still.
    for event in (worked_on, still_held, never_held):
        assert await owner_of(routing, event.data.ticket_id) == moving
    assert (await load_of(routing, moving), await load_of(routing, colleague)) == (3, 1)
    assert body["active_tickets"] == 3

    # No longer a specialist (nor a lead): every untouched ticket goes.
    body = await patch_agent(routing, moving, roles=["reviewer"])

    for event in (still_held, never_held):
        assert await owner_of(routing, event.data.ticket_id) == colleague
    assert await owner_of(routing, worked_on.data.ticket_id) == moving
    assert (await load_of(routing, moving), await load_of(routing, colleague)) == (1, 3)
    assert body["active_tickets"] == 1


async def test_removing_a_language_hands_back_its_untouched_tickets_but_not_a_responsible_leads(
    routing: ServiceHarness,
) -> None:
    domain = f"域-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    lead, (specialist,) = await team_with_lead(routing, domain)
    await patch_agent(routing, specialist, languages=["zh", "en"])
    english = await agent(routing, domains=[domain], languages=["en"], presence="away")
    in_english = ticket_created(subject=f"{keyword} claim", language="en")
    in_chinese = ticket_created(subject=f"{keyword} 理賠", language="zh-TW")
    complaint = ticket_created(subject=f"{keyword} 投訴", language="zh-TW", kind=TicketKind.COMPLAINT)
    for event in (in_english, in_chinese, complaint):
        await consume(routing, event)
    assert [await owner_of(routing, e.data.ticket_id) for e in (in_english, in_chinese, complaint)] == [
        specialist,
        specialist,
        lead,
    ]
    await routing.client.put(f"/v1/agents/{english}/presence", headers=LEAD, json={"presence": "online"})

    await patch_agent(routing, specialist, languages=["zh"])
    # The lead answerable for the difficult ticket holds it whatever their own skills (as a transfer
    # may give it to them).
    await patch_agent(routing, lead, languages=["en"])

    assert await owner_of(routing, in_english.data.ticket_id) == english
    (queued,) = await published(routing, str(in_english.data.ticket_id), QUEUED)
    assert queued["reason"] == PROFILE_CHANGED_REASON
    assert await owner_of(routing, in_chinese.data.ticket_id) == specialist
    assert await owner_of(routing, complaint.data.ticket_id) == lead
    assert await published(routing, str(complaint.data.ticket_id), QUEUED) == []
    assert (await load_of(routing, specialist), await load_of(routing, english)) == (1, 1)
