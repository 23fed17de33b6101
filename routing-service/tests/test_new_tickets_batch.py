"""New tickets routed a run at a time (`routing_service.new_tickets`): the same decisions as one
by one, replays ignored, difficult tickets to the lead, and a run that raced for capacity rolled
back and routed again one ticket at a time — through the consumer, on the real database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY
from routing_factories import (
    ADMIN,
    consume,
    domain_rule,
    is_queued,
    isolated_team,
    load_of,
    owner_of,
    published,
    team_with_lead,
    ticket_created,
)
from sqlalchemy import delete, func, insert, select, update

from helpdesk_runtime.testing import ServiceHarness, partition_records
from helpdesk_shared.chassis.consumer import InboxClaim
from helpdesk_shared.chassis.db import INBOX, OUTBOX
from helpdesk_shared.chassis.trace_context import new_traceparent, parse_traceparent
from helpdesk_shared.contracts import EventEnvelope, TicketKind
from routing_service import classification, new_tickets, repository
from routing_service.domain.assignment import Candidate
from routing_service.domain.difficulty import Decision
from routing_service.models import Agent, Assignment, RoutedTicket, SlaTimer
from routing_service.repository import NewAssignment, RoutingRepository

CREATED = "helpdesk.ticket.created.v1"
ASSIGNED, QUEUED = "helpdesk.ticket.assigned.v1", "helpdesk.ticket.queued.v1"


def records(events: list[EventEnvelope[Any]]) -> list[ConsumerRecord[Any, Any]]:
    return partition_records(events, "helpdesk.intake")


async def route_run(routing: ServiceHarness, events: list[EventEnvelope[Any]]) -> None:
    consumer = routing.runtime.consumer
    assert consumer is not None
    await consumer.handle_records(records(events))


def consumed(outcome: str) -> float:
    labels = {"service": "routing", "type": CREATED, "outcome": outcome}
    return REGISTRY.get_sample_value("helpdesk_events_consumed_total", labels) or 0.0


def fallbacks() -> float:
    return (
        REGISTRY.get_sample_value(
            "helpdesk_event_batch_fallbacks_total", {"service": "routing", "type": CREATED}
        )
        or 0.0
    )


async def outcome(routing: ServiceHarness, events: list[EventEnvelope[Any]], agents: list[str]) -> Any:
    """Per agent, how many of the tickets it got; which tickets (by position) were queued."""
    owners = [await owner_of(routing, e.data.ticket_id) for e in events]
    queued = [n for n, e in enumerate(events) if await is_queued(routing, e.data.ticket_id)]
    return sorted(owners.count(a) for a in agents), queued


async def test_a_run_is_decided_as_one_by_one_would_decide_it(routing: ServiceHarness) -> None:
    agents = await isolated_team(routing, 2, 3, 1)
    one_by_one = [ticket_created() for _ in range(8)]
    for event in one_by_one:
        await consume(routing, event)
    expected = await outcome(routing, one_by_one, agents)

    agents = await isolated_team(routing, 2, 3, 1)
    run = [ticket_created() for _ in range(8)]
    before = fallbacks()
    await route_run(routing, run)

    assert await outcome(routing, run, agents) == expected == ([1, 2, 3], [6, 7])
    assert [await load_of(routing, a) for a in agents] == [2, 3, 1]  # full, never above
    assert fallbacks() == before  # decided as a run, not one by one
    for n, event in enumerate(run):
        key = str(event.data.ticket_id)
        assigned, queued = await published(routing, key, ASSIGNED), await published(routing, key, QUEUED)
        if n < 6:
            assert len(assigned) == 1 and not queued
            assert assigned[0]["agent_id"] in agents and assigned[0]["team_id"] is not None
            assert assigned[0]["reason"].startswith("least-loaded online specialist")
        else:
            assert queued[0]["reason"] == "no online specialist with free capacity" and not assigned


async def test_a_run_skips_tickets_routed_before_and_copies_within_it(routing: ServiceHarness) -> None:
    (agent,) = await isolated_team(routing, 10)
    earlier = ticket_created()
    await consume(routing, earlier)
    fresh = ticket_created()
    again = EventEnvelope.wrap(fresh.data, source="/helpdesk/intake", subject=fresh.subject)  # new event id
    replayed = EventEnvelope.wrap(earlier.data, source="/helpdesk/intake", subject=earlier.subject)

    await route_run(routing, [replayed, fresh, again])

    assert await load_of(routing, agent) == 2
    assert await owner_of(routing, fresh.data.ticket_id) == agent
    assert len(await published(routing, str(fresh.data.ticket_id), ASSIGNED)) == 1
    assert len(await published(routing, str(earlier.data.ticket_id), ASSIGNED)) == 1


async def test_a_run_decides_a_ticket_delivered_twice_in_its_first_place(routing: ServiceHarness) -> None:
    (agent,) = await isolated_team(routing, 1)
    first, second = ticket_created(), ticket_created()
    again = EventEnvelope.wrap(first.data, source="/helpdesk/intake", subject=first.subject)

    await route_run(routing, [first, second, again])

    assert await owner_of(routing, first.data.ticket_id) == agent  # before the second ticket
    assert await is_queued(routing, second.data.ticket_id)


async def test_a_run_claims_its_inbox_rows_with_its_first_read_and_skips_events_claimed_before(
    routing: ServiceHarness,
) -> None:
    """The run's first read inserts its inbox rows: an event whose row was already there (a
    redelivery) is not routed again, even if nothing else tells that its ticket was handled."""
    (agent,) = await isolated_team(routing, 10)
    handled, fresh = ticket_created(), ticket_created()
    consumer = routing.runtime.consumer
    assert consumer is not None
    async with routing.uow() as uow:  # as if a delivery had handled it (whatever it did since)
        await uow.session.execute(
            insert(INBOX).values(
                consumer=consumer._group, event_id=handled.id, event_type=CREATED, topic="helpdesk.intake"
            )
        )
        await uow.commit()
    duplicates = consumed("duplicate")

    await route_run(routing, [handled, fresh])

    assert consumed("duplicate") == duplicates + 1
    assert await owner_of(routing, fresh.data.ticket_id) == agent
    assert await owner_of(routing, handled.data.ticket_id) is None
    assert await published(routing, str(handled.data.ticket_id), ASSIGNED) == []
    assert await load_of(routing, agent) == 1
    async with routing.uow() as uow:
        claimed = await uow.session.scalar(
            select(func.count()).select_from(INBOX).where(INBOX.c.event_id == fresh.id)
        )
    assert claimed == 1


def claim_of(events: Sequence[EventEnvelope[Any]]) -> InboxClaim:
    """The inbox claim the consumer would make for a run of ``events``."""
    return InboxClaim("routing-test", "helpdesk.intake", [e.id for e in events], [e.type for e in events])


def no_events() -> InboxClaim:
    """A first read's claim of nothing: for tests that only read the snapshot."""
    return claim_of([])


async def test_a_runs_first_read_carries_its_ticket_and_event_ids_once_not_in_every_specialists_row(
    routing: ServiceHarness,
) -> None:
    # asyncpg decodes every row's arrays: repeated in each of a few hundred specialists' rows, a
    # run's ids cost more CPU than the round trip the claim saves.
    await isolated_team(routing, 3, 3)
    event = ticket_created()
    claim = claim_of([event])
    async with routing.uow() as uow:
        driver = await uow.driver_connection()
        rows = await driver.fetch(
            repository._CLAIM_ROUTED_AND_AVAILABLE,
            [event.data.ticket_id],
            "online",
            ["specialist"],
            *claim.parameters,
        )
    (first,) = [row for row in rows if row["id"] is None]
    assert first["claimed_ids"] == [event.id] and first["routed_ids"] == []
    specialists = [row for row in rows if row["id"] is not None]
    assert len(specialists) >= 2
    assert all(row["claimed_ids"] is None and row["routed_ids"] is None for row in specialists)


async def test_difficult_tickets_of_a_run_go_to_the_lead_the_rest_to_specialists(
    routing: ServiceHarness,
) -> None:
    domain = f"batch-{uuid.uuid4().hex[:8]}"  # a domain only this team holds
    keyword = await domain_rule(routing, domain)
    lead, (member,) = await team_with_lead(routing, domain)
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴")
    question = ticket_created(subject=f"{keyword} 請問")

    await route_run(routing, [question, complaint])

    assert await owner_of(routing, complaint.data.ticket_id) == lead
    assert await owner_of(routing, question.data.ticket_id) == member
    [assigned] = await published(routing, str(complaint.data.ticket_id), ASSIGNED)
    assert assigned["difficult"] is True
    [classified] = await published(routing, str(complaint.data.ticket_id), "helpdesk.ticket.classified.v1")
    assert classified["difficult"] is True and classified["first_response_due_at"] is not None


async def test_each_tickets_events_carry_its_own_events_correlation_id(routing: ServiceHarness) -> None:
    domain = f"batch-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    await team_with_lead(routing, domain)
    question = ticket_created(subject=f"{keyword} 請問").model_copy(update={"correlationid": "portal-1"})
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴").model_copy(
        update={"correlationid": "portal-2"}  # difficult: routed on its own inside the run
    )
    anonymous = ticket_created(subject=f"{keyword} 諮詢")  # no correlation id: its event's id

    await route_run(routing, [question, complaint, anonymous])

    for event, correlation_id in (
        (question, "portal-1"),
        (complaint, "portal-2"),
        (anonymous, str(anonymous.id)),
    ):
        async with routing.uow() as uow:
            rows = (
                await uow.session.execute(
                    select(OUTBOX.c.event_type, OUTBOX.c.headers, OUTBOX.c.payload).where(
                        OUTBOX.c.key == str(event.data.ticket_id)
                    )
                )
            ).all()
        assert ASSIGNED in {r.event_type for r in rows}
        for row in rows:
            assert row.headers["correlationid"] == row.payload["correlationid"] == correlation_id, row


async def test_each_tickets_events_continue_its_own_events_trace(routing: ServiceHarness) -> None:
    domain = f"batch-{uuid.uuid4().hex[:8]}"
    keyword = await domain_rule(routing, domain)
    await team_with_lead(routing, domain)
    callers = {uuid.uuid4().hex: uuid.uuid4().hex[:16] for _ in range(2)}
    (question_trace, question_parent), (complaint_trace, complaint_parent) = callers.items()
    question = ticket_created(subject=f"{keyword} 請問").model_copy(
        update={"traceparent": f"00-{question_trace}-{question_parent}-01"}
    )
    complaint = ticket_created(kind=TicketKind.COMPLAINT, subject=f"{keyword} 投訴").model_copy(
        update={"traceparent": f"00-{complaint_trace}-{complaint_parent}-00"}  # routed on its own in the run
    )
    untraced = ticket_created(subject=f"{keyword} 諮詢")

    await route_run(routing, [question, complaint, untraced])

    for event, trace_id, flags in (
        (question, question_trace, "01"),
        (complaint, complaint_trace, "00"),
        (untraced, None, "01"),
    ):
        async with routing.uow() as uow:
            rows = (
                await uow.session.execute(
                    select(OUTBOX.c.event_type, OUTBOX.c.headers, OUTBOX.c.payload).where(
                        OUTBOX.c.key == str(event.data.ticket_id)
                    )
                )
            ).all()
        assert ASSIGNED in {r.event_type for r in rows}
        traceparents = {t for r in rows for t in (r.payload["traceparent"], r.headers["traceparent"])}
        assert len(traceparents) == 1, rows  # one event handled: its consequences under one parent-id
        continued = parse_traceparent(traceparents.pop())
        assert continued is not None
        assert continued.flags == flags
        assert continued.parent_id not in callers.values()
        if trace_id is None:  # an event without a trace starts one
            assert continued.trace_id not in callers
        else:
            assert continued.trace_id == trace_id


async def test_a_run_that_lost_a_race_for_capacity_is_routed_again_one_by_one(
    routing: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    (agent,) = await isolated_team(routing, 1)
    await consume(routing, ticket_created())  # the agent is full now
    real = RoutingRepository.routed_and_available

    async def stale(
        self: RoutingRepository, ticket_ids: Sequence[uuid.UUID], claim: InboxClaim
    ) -> tuple[set[uuid.UUID], list[Candidate], set[uuid.UUID]]:
        # What a run would see had the last slot been taken just after it read the agents.
        routed, specialists, claimed = await real(self, ticket_ids, claim)
        free = Candidate(
            uuid.UUID(agent), 0, 1, None, skills={"auto-insurance": 3}, languages=frozenset({"zh"})
        )
        return routed, [free, *specialists], claimed

    monkeypatch.setattr(RoutingRepository, "routed_and_available", stale)
    first, second = ticket_created(), ticket_created()
    before = fallbacks()

    await route_run(routing, [first, second])

    assert fallbacks() == before + 1
    assert await load_of(routing, agent) == 1  # never above capacity
    assert await is_queued(routing, first.data.ticket_id) and await is_queued(routing, second.data.ticket_id)
    for event in (first, second):
        key = str(event.data.ticket_id)
        assert await published(routing, key, ASSIGNED) == []
        assert len(await published(routing, key, QUEUED)) == 1


async def test_a_runs_snapshot_has_each_specialists_profile_as_last_edited(routing: ServiceHarness) -> None:
    # The profile is stored by PostgreSQL (a generated column): it must follow every edit.
    unchanged, edited = await isolated_team(routing, 3, 3)
    response = await routing.client.patch(
        f"/v1/agents/{edited}",
        headers=ADMIN,
        json={
            "domains": ["health-insurance", "life-insurance"],
            "skill_levels": {"life-insurance": 5},
            "languages": ["en", "zh-Hant"],
        },
    )
    assert response.status_code == 200, response.text
    async with routing.uow() as uow:
        _, snapshot, _ = await RoutingRepository(uow.session).routed_and_available([], no_events())
    by_id = {str(c.agent_id): c for c in snapshot}
    assert set(by_id) == {unchanged, edited}
    assert by_id[unchanged].skills == {"auto-insurance": 3}
    assert by_id[edited].skills == {"health-insurance": 3, "life-insurance": 5}
    assert by_id[edited].languages == frozenset({"en", "zh-Hant"})


async def test_a_runs_snapshot_has_when_each_specialist_was_last_assigned_to_the_microsecond(
    routing: ServiceHarness,
) -> None:
    # Read as epoch seconds (cheaper to decode than a timestamp): the round robin's order must
    # survive the trip.
    never, assigned = await isolated_team(routing, 3, 3)
    at = datetime(2026, 12, 6, 10, 15, 30, 987_654, tzinfo=UTC)
    async with routing.uow() as uow:
        await uow.session.execute(
            update(Agent).where(Agent.id == uuid.UUID(assigned)).values(last_assigned_at=at)
        )
        await uow.commit()
    async with routing.uow() as uow:
        _, snapshot, _ = await RoutingRepository(uow.session).routed_and_available([], no_events())
    by_id = {str(c.agent_id): c for c in snapshot}
    assert by_id[assigned].last_assigned_at == at
    assert by_id[never].last_assigned_at is None


async def test_a_runs_assignments_are_stored_with_their_slots_taken_or_not_at_all(
    routing: ServiceHarness,
) -> None:
    roomy, tight = await isolated_team(routing, 3, 1)
    tickets = [uuid.uuid4() for _ in range(5)]

    def assignment(ticket: int, agent: str) -> NewAssignment:
        return NewAssignment(tickets[ticket], uuid.UUID(agent), "skill match", "auto-insurance", "zh")

    now = datetime.now(UTC)
    async with routing.uow() as uow:
        repo = RoutingRepository(uow.session)
        assert await repo.assign_and_take_many(
            [assignment(0, roomy), assignment(1, tight), assignment(2, roomy)], now
        )
        await uow.commit()
    assert [await load_of(routing, a) for a in (roomy, tight)] == [2, 1]
    assert [await owner_of(routing, t) for t in tickets[:3]] == [roomy, tight, roomy]

    async with routing.uow() as uow:  # the tight agent is full: the caller rolls back
        repo = RoutingRepository(uow.session)
        assert not await repo.assign_and_take_many([assignment(3, roomy), assignment(4, tight)], now)
    assert [await load_of(routing, a) for a in (roomy, tight)] == [2, 1]
    assert [await owner_of(routing, t) for t in tickets[3:]] == [None, None]


async def test_a_run_whose_tickets_all_found_a_specialist_is_stored_by_one_statement(
    routing: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = await isolated_team(routing, 2, 2)

    async def not_expected(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the run should be stored by remember_assign_and_take alone")

    for step in ("remember_and_start_clocks", "remember_many", "assign_and_take_many", "take_capacity_many"):
        monkeypatch.setattr(RoutingRepository, step, not_expected)
    run = [ticket_created() for _ in range(3)]
    before = fallbacks()

    await route_run(routing, run)

    assert fallbacks() == before
    assert sorted([await load_of(routing, a) for a in agents]) == [1, 2]
    for event in run:
        ticket_id = event.data.ticket_id
        assert await owner_of(routing, ticket_id) in agents
        assert len(await published(routing, str(ticket_id), ASSIGNED)) == 1
        async with routing.uow() as uow:
            remembered = await uow.session.scalar(
                select(RoutedTicket.ticket_id).where(RoutedTicket.ticket_id == ticket_id)
            )
            clocks = (
                await uow.session.scalars(select(SlaTimer.target).where(SlaTimer.ticket_id == ticket_id))
            ).all()
        assert remembered == ticket_id
        assert sorted(clocks) == ["first_response", "resolution"]


async def test_a_run_with_a_ticket_routed_meanwhile_takes_no_slot_for_it(
    routing: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = await isolated_team(routing, 5)
    earlier = ticket_created()
    await consume(routing, earlier)  # routed by another delivery after the run's first read:
    real = RoutingRepository.routed_and_available

    async def stale(
        self: RoutingRepository, ticket_ids: Sequence[uuid.UUID], claim: InboxClaim
    ) -> tuple[set[uuid.UUID], list[Candidate], set[uuid.UUID]]:
        routed, specialists, claimed = await real(self, ticket_ids, claim)
        return routed - {earlier.data.ticket_id}, specialists, claimed

    monkeypatch.setattr(RoutingRepository, "routed_and_available", stale)
    replayed = EventEnvelope.wrap(earlier.data, source="/helpdesk/intake", subject=earlier.subject)
    fresh = ticket_created()

    await route_run(routing, [replayed, fresh])

    assert await load_of(routing, agents[0]) == 2  # one slot each, none for the replay
    assert await owner_of(routing, fresh.data.ticket_id) == agents[0]
    for event in (earlier, fresh):
        assert len(await published(routing, str(event.data.ticket_id), ASSIGNED)) == 1


async def test_a_run_with_clocks_started_before_routed_tickets_is_routed_one_by_one(
    routing: ServiceHarness,
) -> None:
    (agent,) = await isolated_team(routing, 5)
    old = ticket_created()
    await consume(routing, old)
    async with routing.uow() as uow:  # as routed before `routed_tickets` and since handed back
        await uow.session.execute(delete(RoutedTicket).where(RoutedTicket.ticket_id == old.data.ticket_id))
        await uow.session.execute(delete(Assignment).where(Assignment.ticket_id == old.data.ticket_id))
        await uow.session.execute(update(Agent).where(Agent.id == uuid.UUID(agent)).values(active_tickets=0))
        await uow.session.execute(
            update(SlaTimer)
            .where(SlaTimer.ticket_id == old.data.ticket_id)
            .values(due_at=SlaTimer.due_at + timedelta(minutes=7), warned_at=func.now())  # a clock that moved
        )
        await uow.commit()
        kept = dict(
            (
                await uow.session.execute(
                    select(SlaTimer.target, SlaTimer.due_at).where(SlaTimer.ticket_id == old.data.ticket_id)
                )
            ).all()
        )
    replayed = EventEnvelope.wrap(old.data, source="/helpdesk/intake", subject=old.subject)
    fresh = ticket_created()
    before = fallbacks()

    await route_run(routing, [replayed, fresh])

    assert fallbacks() == before + 1
    assert await load_of(routing, agent) == 2
    assert await owner_of(routing, old.data.ticket_id) == agent
    assert await owner_of(routing, fresh.data.ticket_id) == agent
    async with routing.uow() as uow:
        clocks = (
            await uow.session.execute(
                select(SlaTimer.target, SlaTimer.due_at).where(SlaTimer.ticket_id == old.data.ticket_id)
            )
        ).all()
    assert dict(clocks) == kept  # the clocks that moved keep what they have (not re-planned)


async def test_a_classifier_failure_leaves_the_runs_read_answered_and_the_connection_usable(
    routing: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's first read travels while the tickets are classified: if classifying fails, the
    read is still awaited, so the error is the classifier's and the connection is free again."""
    await isolated_team(routing, 1)

    def broken(self: Any, tickets: Any) -> Any:
        raise RuntimeError("the classifier broke")

    monkeypatch.setattr(classification.Classifier, "decide_many", broken)
    async with routing.uow() as uow:
        with pytest.raises(RuntimeError, match="the classifier broke"):
            event = ticket_created()
            await new_tickets.route_new_tickets(uow, [event], claim_of([event]))
        assert await uow.session.scalar(select(func.count()).select_from(Agent)) >= 1  # not mid-read


def test_a_run_leaves_the_agents_a_run_in_flight_is_storing_to_others() -> None:
    """Concurrent runs of this process avoid each other's agents while they are equally good: a
    run counts the slots another run is storing (which would otherwise make it wait for that
    run's row locks), and forgets them once stored — or failed."""
    first, second = (
        Candidate(uuid.uuid4(), 0, 5, None, skills={"auto-insurance": 3}, languages=frozenset({"zh"}))
        for _ in range(2)
    )
    decision = Decision(
        domain="auto-insurance", confidence=0.9, domains=[], category=None, urgent=False, difficult=False
    )

    def choose() -> list[Any]:
        run = [new_tickets._Routed(ticket_created().data, decision, None, "c", new_traceparent())]
        choices, left = new_tickets._choose(run, [first, second], datetime.now(UTC))
        assert not left
        return choices

    (choice,) = choose()
    assert choice.candidate is first  # equal ranks: the snapshot's order
    storing = [NewAssignment(uuid.uuid4(), first.agent_id, choice.reason, "auto-insurance", None)]
    with new_tickets._being_taken(storing):
        assert choose()[0].candidate is second
    assert choose()[0].candidate is first  # stored: the next snapshot counts it
    with pytest.raises(RuntimeError), new_tickets._being_taken(storing):
        raise RuntimeError("the statement failed")
    assert choose()[0].candidate is first
    assert not new_tickets._BEING_TAKEN
