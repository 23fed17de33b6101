"""Routing killed (SIGKILL) mid-flow and started again: nothing lost, nothing assigned twice, and
SLA clocks stored before the crash still fire, once.

The outbox relays at least once, so after a crash a copy of an event may reach Kafka again — with
the same CloudEvents id, which is what consumers deduplicate on. Everything here counts distinct
event ids; a second *decision* (a different id) for the same ticket would be a double assignment.

The smallest SLA target is one business minute, so a breach needs a ticket created at least a
minute earlier. The first test (tickets through intake) checks warnings only; the second publishes
``ticket.created`` as intake's relay does, for tickets accepted 15 s before, to see breaches too.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpdesk_runtime._sync import run_sync
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.stack import Stack
from helpdesk_shared.contracts import (
    Priority,
    SlaBreached,
    SlaWarning,
    TicketAssigned,
    TicketCreated,
    TicketEscalated,
    TicketQueued,
)

from .routing_e2e import (
    LEAD,
    AgentSampler,
    EventTap,
    Seen,
    TicketFlow,
    TicketInjector,
    active_tickets,
    create_sla_policy,
    create_team,
    intake_tickets,
    launch_services,
    resolve_as_assignee,
    ticket_body,
    topic,
)
from .test_e2e_ticket_flow import eventually

pytestmark = pytest.mark.e2e

SPECIALISTS, CAPACITY = 3, 3
RATE = 10.0  # tickets per second, posted to intake until shortly after routing is back
FLOW_WARNING_SHARE = 0.2  # of a one-minute first-response target: warnings 12 s after creation
ASSIGNED, QUEUED = TicketAssigned.cloudevent_type(), TicketQueued.cloudevent_type()


def test_routing_killed_mid_flow_loses_nothing_and_assigns_nothing_twice(
    infra: Infra, tmp_path: Path
) -> None:
    stack = launch_services(infra, ("intake", "routing"), log_dir=tmp_path / "logs")
    try:
        crash_mid_flow(stack, infra)
    finally:
        stack.stop()


def crash_mid_flow(stack: Stack, infra: Infra) -> None:
    routing, intake = stack.url("routing"), stack.url("intake")
    team = create_team(routing, specialists=SPECIALISTS, capacity=CAPACITY, lead_capacity=1)
    policy = create_sla_policy(
        routing, first_response_minutes=1, resolution_working_days=1, warning_share=FLOW_WARNING_SHARE
    )
    resolved: dict[uuid.UUID, str] = {}

    def resolve_one_per_agent(tap: EventTap, client: httpx.Client) -> None:
        held = {str(s.data.agent_id): s.data.ticket_id for s in tap.unique(TicketAssigned)}
        for agent, ticket in held.items():
            if ticket not in resolved:
                resolve_as_assignee(client, ticket, agent)
                resolved[ticket] = agent

    def body(n: int) -> dict[str, Any]:
        return ticket_body(n, priority=("low", "normal", "high")[n % 3])

    with (
        EventTap(infra.kafka_bootstrap, [topic(stack, "routing")]) as tap,
        AgentSampler(routing) as sampler,
        httpx.Client(base_url=intake, timeout=10) as client,
        TicketFlow(intake, body, rate=RATE) as flow,
    ):
        tap.wait(
            lambda t: len(t.unique(TicketAssigned)) >= SPECIALISTS * CAPACITY, within=30, what="a full team"
        )
        resolve_one_per_agent(tap, client)  # their ticket.resolved are in flight when routing dies
        assert flow.flowing
        sampled_before_crash = sampler.samples
        killed_at = datetime.now(UTC)
        stack.kill_service("routing")
        posted_at_crash = len(flow.created)
        stack.restart("routing")  # intake keeps accepting tickets and resolutions meanwhile
        posted_while_down = len(flow.created) - posted_at_crash
        sampled_at_restart = sampler.samples
        time.sleep(1.0)
        created = flow.stop()
        assert (
            posted_at_crash > 0
            and posted_while_down > 0
            and len(created) > posted_at_crash + posted_while_down
        )

        ids = [uuid.UUID(t["id"]) for t in created]
        tap.wait(
            lambda t: len(t.by_ticket(TicketAssigned, TicketQueued).keys() & set(ids)) == len(ids),
            within=45,
            what="a routing decision for every ticket after the restart",
        )
        resolve_one_per_agent(tap, client)  # assigned before or after the crash, resolved after it
        expected_assignments = SPECIALISTS * CAPACITY + len(resolved)
        tap.wait(
            lambda t: len(t.unique(TicketAssigned)) >= expected_assignments,
            within=30,
            what="a dequeue for every resolution",
        )

        decisions = check_one_decision_each(tap, ids, expected_assignments)
        holders = Counter(str(d.agent_id) for d in decisions.values() if isinstance(d, TicketAssigned))
        load = {agent: holders[agent] - Counter(resolved.values())[agent] for agent in team.specialists}
        assert load == dict.fromkeys(team.specialists, CAPACITY)
        eventually(lambda: active_tickets(routing) == {team.lead_id: 0} | load, within=15.0, interval=0.2)

        def intake_agrees() -> bool:
            for agent in team.specialists:
                held = {t for t, d in decisions.items() if getattr(d, "agent_id", None) == uuid.UUID(agent)}
                shown = intake_tickets(client, assignee_id=agent, status="assigned")
                if {uuid.UUID(t["id"]) for t in shown} != held - resolved.keys():
                    return False
            waiting = {t for t, d in decisions.items() if isinstance(d, TicketQueued)}
            return {uuid.UUID(t["id"]) for t in intake_tickets(client, status="new")} == waiting

        eventually(intake_agrees, within=15.0, interval=0.2)

        open_tickets = set(ids) - resolved.keys()
        tap.wait(
            lambda t: open_tickets <= t.by_ticket(SlaWarning).keys(),
            within=40,
            what="a first-response warning for every open ticket",
        )
        time.sleep(2.5)  # the SLA worker passes every second: room for a second firing to show up
        warnings = tap.by_ticket(SlaWarning)
        twice = {t: len(w) for t, w in warnings.items() if len(w) > 1}
        assert twice == {}, "SLA warnings fired more than once"
        target = timedelta(minutes=1)
        for fired in warnings.values():
            warning = fired[0].data
            assert warning.policy_id == uuid.UUID(policy["id"]) and warning.target == "first_response"
            assert warning.due_at - target * (1 - FLOW_WARNING_SHARE) <= warning.warned_at < warning.due_at
        stored_before_crash = {
            t
            for t, d in tap.by_ticket(TicketAssigned, TicketQueued).items()
            if d[0].envelope.time < killed_at
        }
        survived = {
            t for t in stored_before_crash & open_tickets if warnings[t][0].data.warned_at > killed_at
        }
        assert survived, "no clock started before the crash fired after it"
        breaches = tap.by_ticket(SlaBreached)  # a minute after creation: only if this run was slow
        assert all(len(b) == 1 and b[0].data.breached_at >= b[0].data.due_at for b in breaches.values())

    # Sampled before the crash and all along after the restart, or the two checks below say nothing.
    assert sampled_before_crash >= 1, "no sample of GET /v1/agents before the crash"
    sampled_after_restart = sampler.samples - sampled_at_restart
    assert sampled_after_restart >= 50, (
        f"only {sampled_after_restart} samples of GET /v1/agents after the restart"
    )
    assert sampler.over_capacity == [], "an agent was seen above capacity"
    assert all(sampler.peak[a] <= CAPACITY for a in team.specialists)


def check_one_decision_each(
    tap: EventTap, ids: list[uuid.UUID], expected_assignments: int
) -> dict[uuid.UUID, TicketAssigned | TicketQueued]:
    """Per ticket: queued at most once, assigned at most once (after its queueing), nothing else.

    Returns each ticket's current decision."""
    decided = tap.by_ticket(TicketAssigned, TicketQueued)
    assert decided.keys() >= set(ids), "tickets lost: no routing decision"
    current: dict[uuid.UUID, TicketAssigned | TicketQueued] = {}
    for ticket in ids:
        kinds = [s.type for s in decided[ticket]]
        assert kinds in ([ASSIGNED], [QUEUED], [QUEUED, ASSIGNED]), f"{ticket}: decisions {kinds}"
        current[ticket] = decided[ticket][-1].data
    assert sum(isinstance(d, TicketAssigned) for d in current.values()) == expected_assignments
    return current


# ---- SLA clocks across two crashes ------------------------------------------------------------

CLOCKS = 20  # tickets whose clocks run when routing is first killed
LATE = 10  # tickets published while routing is down
FIRST_RESPONSE = timedelta(minutes=1)  # the test policy's target (the smallest there is) …
CLOCK_WARNING_SHARE = 0.5  # … its warning due 30 s after a ticket's creation, its breach 60 s after
WARNINGS_AFTER_PUBLISH = timedelta(seconds=15)
"""Every ticket is accepted 15 s before the first publish: from that publish, 15 s to start the
first clocks and kill routing before any warning is due (it takes about a second), then 30 s to
restart it, let the group give its partitions back (the 6 s session timeout), fire every warning
and kill it again before any breach is due (about 10 s)."""
BACKDATE = FIRST_RESPONSE * CLOCK_WARNING_SHARE - WARNINGS_AFTER_PUBLISH
KILL_MARGIN = timedelta(seconds=3)  # the second kill comes at least this long before the breaches


def created_event(at: datetime) -> TicketCreated:
    ticket_id = uuid.uuid4()
    return TicketCreated(
        ticket_id=ticket_id,
        number=f"HD-{ticket_id.hex[:6]}",
        channel="web",
        kind="question",
        subject="保單理賠進度",
        description="上個月提交的理賠申請還沒有結果",
        priority=Priority.NORMAL,
        customer_id=uuid.uuid4(),
        created_at=at,
    )


def test_sla_clocks_fire_exactly_once_across_routing_crashes(infra: Infra, tmp_path: Path) -> None:
    stack = launch_services(infra, ("routing",), log_dir=tmp_path / "logs")
    try:
        crash_twice(stack, infra)
    finally:
        stack.stop()


def wait_within_budget(
    tap: EventTap, check: Callable[[EventTap], Any], *, by: datetime, what: str, timeline: dict[str, datetime]
) -> None:
    """Wait for ``check`` until ``by``, the latest the test's timing allows; past it, say so."""
    try:
        tap.wait(check, within=max(0.0, (by - datetime.now(UTC)).total_seconds()), what=what)
    except AssertionError as exc:
        pytest.fail(
            f"{what}: not seen by {by:%H:%M:%S.%f}, the latest this test's timing allows — either "
            f"routing never did it, or the setup overran its budget on a slow machine "
            f"(so far: {steps(timeline)}); {exc}"
        )


def check_budget(timeline: dict[str, datetime], step: str, *, before: datetime, because: str) -> None:
    if timeline[step] >= before:
        pytest.fail(
            f"the setup overran its budget: {step} at {timeline[step]:%H:%M:%S.%f}, not before "
            f"{before:%H:%M:%S.%f} ({because}); so far: {steps(timeline)}"
        )


def steps(timeline: dict[str, datetime]) -> str:
    start = next(iter(timeline.values()))
    return ", ".join(f"{name} +{(at - start).total_seconds():.1f}s" for name, at in timeline.items())


def crash_twice(stack: Stack, infra: Infra) -> None:
    routing = stack.url("routing")
    injector = TicketInjector(infra.kafka_bootstrap, topic(stack, "intake"))

    def publish(payloads: list[TicketCreated]) -> list[uuid.UUID]:
        run_sync(lambda: injector.publish(payloads))
        return [p.ticket_id for p in payloads]

    with EventTap(infra.kafka_bootstrap, [topic(stack, "routing")]) as tap:
        # /readyz does not wait for the consumer group: a first ticket shows routing consuming
        # before any of the test's clocks run. It is published before the test's policy exists, so
        # the default policies time it (hours away), and it is left out of every check below.
        (warm_up,) = publish([created_event(datetime.now(UTC))])
        tap.wait(lambda t: warm_up in t.by_ticket(TicketQueued), within=90, what="routing consuming")
        policy = create_sla_policy(
            routing, first_response_minutes=1, resolution_working_days=1, warning_share=CLOCK_WARNING_SHARE
        )

        timeline = {"published": datetime.now(UTC)}
        created_at = timeline["published"] - BACKDATE
        warn_at = created_at + FIRST_RESPONSE * CLOCK_WARNING_SHARE  # the same for every ticket
        due_at = created_at + FIRST_RESPONSE
        running = publish([created_event(created_at) for _ in range(CLOCKS)])
        wait_within_budget(
            tap,
            lambda t: set(running) <= t.by_ticket(TicketQueued).keys(),
            by=warn_at - KILL_MARGIN,
            what="clocks started before their warnings are due",
            timeline=timeline,
        )
        first_crash = timeline["clocks started"] = datetime.now(UTC)
        stack.kill_service("routing")
        timeline["first kill"] = datetime.now(UTC)
        check_budget(
            timeline, "first kill", before=warn_at, because="the warnings must be the restarted routing's"
        )
        # Published while routing is down, accepted as long ago as the others: consumed only after
        # the restart, when their warnings may be due already (a warning, not a breach, still).
        late = publish([created_event(created_at) for _ in range(LATE)])
        stack.restart("routing")
        timeline["restarted"] = datetime.now(UTC)
        tickets = set(running + late)

        wait_within_budget(
            tap,
            lambda t: tickets <= t.by_ticket(SlaWarning).keys(),
            by=due_at - KILL_MARGIN,
            what="every warning, before the breaches are due",
            timeline=timeline,
        )
        second_crash = timeline["warned"] = datetime.now(UTC)
        stack.restart("routing")  # SIGKILL again: warned, not yet breached
        timeline["restarted again"] = datetime.now(UTC)
        tap.wait(
            lambda t: tickets <= t.by_ticket(SlaBreached).keys(),
            within=max(0.0, (due_at - datetime.now(UTC)).total_seconds()) + 30,
            what="every breach",
        )
        time.sleep(2.5)  # room for a second firing to show up

        for kind in (SlaWarning, SlaBreached, TicketEscalated, TicketQueued):
            fired = tap.by_ticket(kind)
            assert {t: len(fired[t]) for t in tickets} == dict.fromkeys(tickets, 1), f"{kind.event_type}"
        warnings, breaches = tap.by_ticket(SlaWarning), tap.by_ticket(SlaBreached)
        assert all(first_crash < one(warnings[t]).warned_at < second_crash for t in tickets)
        assert all(one(warnings[t]).due_at == due_at for t in tickets)
        assert all(one(breaches[t]).breached_at > second_crash for t in tickets)
        assert all(one(breaches[t]).policy_id == uuid.UUID(policy["id"]) for t in tickets)
        escalated = tap.by_ticket(TicketEscalated)
        assert {one(escalated[t]).priority for t in tickets} == {Priority.HIGH}

        with httpx.Client(base_url=routing, headers=LEAD, timeout=5) as client:
            for ticket in running[:3] + late[:3]:
                clocks = client.get(f"/v1/tickets/{ticket}/sla").json()
                first = next(c for c in clocks["timers"] if c["target"] == "first_response")
                assert first["state"] == "breached" and first["escalated"] is True
                assert clocks["priority"] == "high"


def one(seen: list[Seen]) -> Any:
    assert len(seen) == 1
    return seen[0].data
