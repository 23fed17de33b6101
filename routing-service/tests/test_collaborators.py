"""Collaborators (疑難問題): a lead adds agents who may draft answers on a ticket someone holds.

Only a lead (or an admin) changes the list; each real change is announced as
`ticket.collaborators_changed` carrying the whole list; adding twice or removing an absent
collaborator changes nothing and announces nothing; resolving or closing a ticket clears it.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from routing_factories import (
    agent,
    consume,
    isolated_team,
    load_of,
    owner_of,
    published,
    resolved,
    ticket_created,
)
from sqlalchemy import select

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.contracts import EventEnvelope, TicketClosed
from helpdesk_shared.contracts.enums import CloseReason, TicketStatus
from routing_service import collaborators
from routing_service.models import TicketCollaborator

CHANGED = "helpdesk.ticket.collaborators_changed.v1"


async def lead(routing: ServiceHarness, *owners: str) -> tuple[str, dict[str, str]]:
    """A lead (an agent, offline) made the lead of the owners' teams — a lead changes only the
    collaborators of their own team's (or domain's) tickets; returns the lead and their token."""
    lead_id = await agent(routing, name="組長", roles=["lead"], presence="offline")
    for owner in owners:
        team_id = (await routing.client.get(f"/v1/agents/{owner}", headers=auth_headers("admin"))).json()[
            "team_id"
        ]
        led = await routing.client.patch(
            f"/v1/teams/{team_id}", headers=auth_headers("admin"), json={"lead_id": lead_id}
        )
        assert led.status_code == 200, led.text
    return lead_id, auth_headers("lead", sub=lead_id)


async def assigned_ticket(routing: ServiceHarness) -> tuple[uuid.UUID, str]:
    """A ticket held by a fresh agent; returns its id and the assignee's."""
    await isolated_team(routing, 3)
    event = ticket_created()
    await consume(routing, event)
    owner = await owner_of(routing, event.data.ticket_id)
    assert owner is not None
    return event.data.ticket_id, owner


def url(ticket_id: uuid.UUID | str, agent_id: str | None = None) -> str:
    base = f"/v1/tickets/{ticket_id}/collaborators"
    return base if agent_id is None else f"{base}/{agent_id}"


async def changes(routing: ServiceHarness, ticket_id: uuid.UUID) -> list[dict[str, Any]]:
    return await published(routing, str(ticket_id), CHANGED)


def closed(ticket_id: uuid.UUID) -> EventEnvelope[Any]:
    payload = TicketClosed(
        ticket_id=ticket_id,
        reason=CloseReason.DUPLICATE,
        previous_status=TicketStatus.ASSIGNED,
        closed_at=datetime.now(UTC),
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(ticket_id))


async def test_a_lead_adds_and_removes_collaborators_and_each_change_is_announced(
    routing: ServiceHarness,
) -> None:
    ticket_id, owner = await assigned_ticket(routing)
    helper, second = await agent(routing, presence="offline"), await agent(routing)
    lead_id, headers = await lead(routing, owner)

    added = await routing.client.put(url(ticket_id, helper), headers=headers)
    again = await routing.client.put(url(ticket_id, helper), headers=headers)
    both = await routing.client.put(url(ticket_id, second), headers=auth_headers("admin"))
    shown = await routing.client.get(url(ticket_id), headers=auth_headers("agent"))

    assert added.status_code == 200, added.text
    body = added.json()
    assert (body["ticket_id"], body["assignee_id"]) == (str(ticket_id), owner)
    assert [(c["agent_id"], c["name"], c["added_by"]) for c in body["collaborators"]] == [
        (helper, "專員", lead_id)
    ]
    assert again.status_code == 200 and again.json() == body  # idempotent: nothing changed
    assert both.status_code == 200, both.text
    assert shown.status_code == 200
    assert [c["agent_id"] for c in shown.json()["collaborators"]] == [helper, second]  # in order added

    removed = await routing.client.delete(url(ticket_id, helper), headers=headers)
    absent = await routing.client.delete(url(ticket_id, helper), headers=headers)
    assert (removed.status_code, absent.status_code) == (204, 204)
    left = await routing.client.get(url(ticket_id), headers=auth_headers("reviewer"))
    assert [c["agent_id"] for c in left.json()["collaborators"]] == [second]

    announced = await changes(routing, ticket_id)
    assert [e["collaborator_ids"] for e in announced] == [[helper], [helper, second], [second]]
    assert announced[0]["changed_by"] == lead_id
    assert all(e["ticket_id"] == str(ticket_id) and e["changed_at"] for e in announced)


async def test_only_a_lead_or_admin_may_change_collaborators(routing: ServiceHarness) -> None:
    ticket_id, owner = await assigned_ticket(routing)
    helper = await agent(routing)

    by_assignee = await routing.client.put(url(ticket_id, helper), headers=auth_headers("agent", sub=owner))
    by_reviewer = await routing.client.delete(url(ticket_id, helper), headers=auth_headers("reviewer"))
    by_channel = await routing.client.get(url(ticket_id), headers=auth_headers("channel"))
    anonymous = await routing.client.put(url(ticket_id, helper))

    assert (by_assignee.status_code, by_reviewer.status_code, by_channel.status_code) == (403, 403, 403)
    assert anonymous.status_code == 401
    for response in (by_assignee, by_reviewer, by_channel, anonymous):
        assert response.headers["content-type"] == "application/problem+json"
    assert await changes(routing, ticket_id) == []


async def test_the_ticket_must_be_assigned_and_the_collaborator_a_known_agent_other_than_the_assignee(
    routing: ServiceHarness,
) -> None:
    ticket_id, owner = await assigned_ticket(routing)
    helper = await agent(routing)
    _, headers = await lead(routing, owner)

    unknown_ticket = await routing.client.put(url(uuid.uuid4(), helper), headers=headers)
    unknown_ticket_delete = await routing.client.delete(url(uuid.uuid4(), helper), headers=headers)
    unknown_ticket_get = await routing.client.get(url(uuid.uuid4()), headers=headers)
    unknown_agent = await routing.client.put(url(ticket_id, str(uuid.uuid4())), headers=headers)
    assignee = await routing.client.put(url(ticket_id, owner), headers=headers)
    malformed = await routing.client.put(url(ticket_id, "not-a-uuid"), headers=headers)

    assert (
        unknown_ticket.status_code,
        unknown_ticket_delete.status_code,
        unknown_ticket_get.status_code,
    ) == (
        404,
        404,
        404,
    )
    assert unknown_ticket.json()["type"].endswith("/ticket-not-assigned")
    assert unknown_agent.status_code == 422
    assert unknown_agent.json()["type"].endswith("/unknown-collaborator")
    assert assignee.status_code == 409
    assert assignee.json()["type"].endswith("/collaborator-is-assignee")
    assert "assignee" in assignee.json()["detail"]
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "path.agent_id"
    for response in (unknown_ticket, unknown_ticket_get, unknown_agent, assignee, malformed):
        assert response.headers["content-type"] == "application/problem+json"
    assert await changes(routing, ticket_id) == []


async def test_resolving_or_closing_clears_the_collaborators(routing: ServiceHarness) -> None:
    first, first_owner = await assigned_ticket(routing)
    second, second_owner = await assigned_ticket(routing)
    untouched, _ = await assigned_ticket(routing)
    _, headers = await lead(routing, first_owner, second_owner)
    helper = await agent(routing)
    for ticket_id in (first, second):
        response = await routing.client.put(url(ticket_id, helper), headers=headers)
        assert response.status_code == 200, response.text

    assert await consume(routing, resolved(first))
    assert await consume(routing, closed(second))
    assert await consume(routing, resolved(untouched))

    async with routing.uow() as uow:
        left = (
            await uow.session.execute(
                select(TicketCollaborator.ticket_id).where(TicketCollaborator.ticket_id.in_([first, second]))
            )
        ).all()
    assert left == []
    for ticket_id in (first, second):
        announced = await changes(routing, ticket_id)
        assert [e["collaborator_ids"] for e in announced] == [[helper], []]
        assert announced[-1]["changed_by"] is None  # routing cleared them, nobody asked
    assert await changes(routing, untouched) == []  # nothing to clear, nothing announced
    assert await owner_of(routing, first) is None  # the slot was still released
    assert await load_of(routing, first_owner) == 0
    gone = await routing.client.get(url(first), headers=headers)
    assert gone.status_code == 200 and gone.json()["collaborators"] == []
    assert gone.json()["assignee_id"] is None


async def test_concurrent_changes_each_announce_the_whole_list_in_order(routing: ServiceHarness) -> None:
    ticket_id, owner = await assigned_ticket(routing)
    helpers = [await agent(routing) for _ in range(5)]
    _, headers = await lead(routing, owner)

    responses = await asyncio.gather(
        *(routing.client.put(url(ticket_id, helper), headers=headers) for helper in helpers)
    )

    assert [r.status_code for r in responses] == [200] * 5
    announced = [e["collaborator_ids"] for e in await changes(routing, ticket_id)]
    assert [len(ids) for ids in announced] == [1, 2, 3, 4, 5]  # each list holds every earlier change
    assert all(set(earlier) < set(later) for earlier, later in itertools.pairwise(announced))
    assert set(announced[-1]) == set(helpers)


async def test_a_ticket_has_a_bounded_number_of_collaborators(
    routing: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collaborators, "MAX_COLLABORATORS", 1)
    ticket_id, owner = await assigned_ticket(routing)
    first, second = await agent(routing), await agent(routing)
    _, headers = await lead(routing, owner)

    assert (await routing.client.put(url(ticket_id, first), headers=headers)).status_code == 200
    too_many = await routing.client.put(url(ticket_id, second), headers=headers)
    again = await routing.client.put(url(ticket_id, first), headers=headers)

    assert too_many.status_code == 409
    assert too_many.json()["type"].endswith("/too-many-collaborators")
    assert again.status_code == 200  # already there: no new collaborator, so no limit
    assert [e["collaborator_ids"] for e in await changes(routing, ticket_id)] == [[first]]


async def test_a_collaborator_the_ticket_is_transferred_to_leaves_the_list(routing: ServiceHarness) -> None:
    ticket_id, owner = await assigned_ticket(routing)
    helper, other = await agent(routing), await agent(routing)
    lead_id, headers = await lead(routing, owner)
    for collaborator in (helper, other):
        assert (await routing.client.put(url(ticket_id, collaborator), headers=headers)).status_code == 200

    moved = await routing.client.post(
        f"/v1/tickets/{ticket_id}/transfer", headers=headers, json={"to_agent_id": helper, "reason": "接手"}
    )

    assert moved.status_code == 201, moved.text
    view = (await routing.client.get(url(ticket_id), headers=headers)).json()
    assert view["assignee_id"] == helper
    assert [c["agent_id"] for c in view["collaborators"]] == [other]
    last = (await changes(routing, ticket_id))[-1]
    assert last["collaborator_ids"] == [other] and last["changed_by"] == lead_id
