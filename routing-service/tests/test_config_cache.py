"""Routing configuration held in memory: edits through this replica apply at once, edits saved by
another replica (straight into the database here) within the time to live, never later."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from routing_factories import delivered, ticket_created
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts import EventEnvelope, Priority, TicketClassified
from routing_service import config_cache, sla
from routing_service.app import create_app
from routing_service.config_cache import ConfigCache
from routing_service.domain.business_time import cn_default
from routing_service.models import RoutingRule, SlaPolicy, SlaTimer
from routing_service.settings import RoutingSettings
from routing_service.sla_repository import SLA_CONFIG

ADMIN = auth_headers("admin")
TTL = 0.4
DEFAULT_POLICY = uuid.UUID("5a000000-0000-4000-8000-000000000005")  # 480 business minutes, 3 days
CN = cn_default()


# ---- the cache itself -------------------------------------------------------------------------


def fake_session(url: str) -> AsyncSession:
    """A session bound to an engine of ``url`` (never connected: the cache only names it)."""
    engine = create_async_engine(url)
    return cast(AsyncSession, SimpleNamespace(get_bind=lambda: engine.sync_engine))


async def test_a_snapshot_is_kept_for_its_time_to_live_per_database() -> None:
    loads: list[str] = []

    async def load(session: AsyncSession) -> int:
        loads.append(config_cache.database_key(session))
        return len(loads)

    cache: ConfigCache[int] = ConfigCache("test", load)
    one, two = fake_session("postgresql+asyncpg://one"), fake_session("postgresql+asyncpg://two")
    config_cache.set_ttl("postgresql+asyncpg://one", 0.2)
    config_cache.set_ttl("postgresql+asyncpg://two", 60)
    assert [await cache.get(one), await cache.get(one), await cache.get(two), await cache.get(two)] == [
        1,
        1,
        2,
        2,
    ]
    await asyncio.sleep(0.25)
    assert await cache.get(one) == 3  # expired
    assert await cache.get(two) == 2  # not yet
    cache.invalidate(two)
    assert await cache.get(two) == 4
    config_cache.set_ttl("postgresql+asyncpg://one", 0)
    assert [await cache.get(one), await cache.get(one)] == [5, 6]  # 0: read every time


def test_a_database_is_named_by_its_url_without_the_password() -> None:
    engine = create_async_engine("postgresql+asyncpg://helpdesk:s3cret@127.0.0.1:5432/routing")
    other = create_async_engine("postgresql+asyncpg://helpdesk:s3cret@127.0.0.1:5432/routing_b")
    key = config_cache.engine_key(engine)
    assert key == "postgresql+asyncpg://helpdesk:***@127.0.0.1:5432/routing"
    assert config_cache.engine_key(engine.sync_engine) == key == config_cache.engine_key(engine)
    assert config_cache.engine_key(other) != key


async def test_a_reload_racing_with_an_edit_is_not_kept() -> None:
    """A snapshot read before an edit committed must not be served as fresh after it."""
    started, release = asyncio.Event(), asyncio.Event()
    values = iter(["before the edit", "after the edit"])

    async def load(session: AsyncSession) -> str:
        value = next(values)
        if value == "before the edit":
            started.set()
            await release.wait()
        return value

    cache: ConfigCache[str] = ConfigCache("test", load)
    session = fake_session("postgresql+asyncpg://race")
    config_cache.set_ttl("postgresql+asyncpg://race", 60)
    slow = asyncio.create_task(cache.get(session))
    await started.wait()
    cache.invalidate(session)  # the edit commits while the reload is under way
    release.set()
    assert await slow == "before the edit"  # that caller read before the edit: fine for it
    assert await cache.get(session) == "after the edit"  # but it was not kept


def test_the_time_to_live_is_a_setting() -> None:
    assert RoutingSettings(database_url="postgresql://x/y").config_cache_seconds == 2.0
    with pytest.raises(ValueError):
        RoutingSettings(database_url="postgresql://x/y", config_cache_seconds=-1)
    with pytest.raises(ValueError, match="third of the session timeout"):
        RoutingSettings(
            database_url="postgresql://x/y",
            consumer_session_timeout_ms=6_000,
            consumer_heartbeat_interval_ms=3_000,
        )


# ---- on a real routing database ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def cfg(make_service: Any) -> AsyncIterator[ServiceHarness]:
    async with make_service(
        "routing", RoutingSettings, create_app, label="cfg", config_cache_seconds=TTL, sla_poll_seconds=3600
    ) as harness:
        for _ in range(100):  # the warm-up task applies the setting as it starts
            if config_cache.ttl(config_cache.engine_key(harness.runtime.engine)) == TTL:
                break
            await asyncio.sleep(0.05)
        yield harness


async def handle(harness: ServiceHarness, event: EventEnvelope[Any]) -> bool:
    consumer = harness.runtime.consumer
    assert consumer is not None
    return await consumer.handle_event(event, topic="helpdesk.intake")


async def first_response_due(harness: ServiceHarness, ticket_id: uuid.UUID) -> datetime:
    async with harness.uow() as uow:
        due = await uow.session.scalar(
            select(SlaTimer.due_at).where(
                SlaTimer.ticket_id == ticket_id, SlaTimer.target == "first_response"
            )
        )
    assert due is not None
    return due


async def new_ticket_due(harness: ServiceHarness, at: datetime) -> datetime:
    event = ticket_created(created_at=at)
    assert await handle(harness, event)
    return await first_response_due(harness, event.data.ticket_id)


async def set_first_response(harness: ServiceHarness, minutes: int) -> None:
    """What another replica's `PUT /v1/sla/policies/{id}` leaves behind: only the row changed."""
    async with harness.uow() as uow:
        await uow.session.execute(
            update(SlaPolicy).where(SlaPolicy.id == DEFAULT_POLICY).values(first_response_minutes=minutes)
        )
        await uow.commit()


def sla_snapshot_loaded_at(harness: ServiceHarness) -> float:
    """When (``time.monotonic()``) the SLA configuration snapshot in use was loaded."""
    entry = SLA_CONFIG._entries.get(config_cache.engine_key(harness.runtime.engine))
    assert entry is not None, "no SLA configuration snapshot is held"
    return entry.loaded_at


async def test_a_policy_edited_on_another_replica_applies_within_the_time_to_live(
    cfg: ServiceHarness,
) -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert await new_ticket_due(cfg, start) == CN.add_business_minutes(start, 480)  # snapshot loaded
    await set_first_response(cfg, 120)
    edited_at = time.monotonic()
    try:
        edited = CN.add_business_minutes(start, 120)
        seen = []
        while True:
            asked_at = time.monotonic()
            if (due := await new_ticket_due(cfg, start)) == edited:
                break
            seen.append(due)
            # The old policy may come only from the snapshot loaded before the edit, and only while
            # that is younger than the time to live — whatever the time the machine takes for it.
            loaded_at = sla_snapshot_loaded_at(cfg)
            assert loaded_at < edited_at, "a snapshot loaded after the edit still has the old policy"
            assert asked_at - loaded_at < TTL, f"a snapshot {asked_at - loaded_at:.2f}s old was used"
            # The bound above is the claim; this one only keeps a broken cache from looping for ever.
            assert time.monotonic() < edited_at + TTL + 2, "the edit never took effect"
            await asyncio.sleep(0.05)
        assert all(d == CN.add_business_minutes(start, 480) for d in seen)  # old, then new: never mixed
    finally:
        await set_first_response(cfg, 480)
        await asyncio.sleep(TTL)


async def test_an_edit_through_this_replica_applies_to_the_next_ticket(cfg: ServiceHarness) -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert await new_ticket_due(cfg, start) == CN.add_business_minutes(start, 480)
    policy = (await cfg.client.get(f"/v1/sla/policies/{DEFAULT_POLICY}", headers=ADMIN)).json()
    body = {k: v for k, v in policy.items() if k not in ("id", "created_at", "updated_at")}
    config_cache.set_ttl(config_cache.engine_key(cfg.runtime.engine), 3600)  # only the invalidation can help
    try:
        response = await cfg.client.put(
            f"/v1/sla/policies/{DEFAULT_POLICY}", json=body | {"first_response_minutes": 60}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert await new_ticket_due(cfg, start) == CN.add_business_minutes(start, 60)
    finally:
        await cfg.client.put(f"/v1/sla/policies/{DEFAULT_POLICY}", json=body, headers=ADMIN)
        config_cache.set_ttl(config_cache.engine_key(cfg.runtime.engine), TTL)
    assert await new_ticket_due(cfg, start) == CN.add_business_minutes(start, 480)


async def classified_domain(harness: ServiceHarness, text: str) -> str | None:
    event = ticket_created(subject=text, description=text)
    assert await handle(harness, event)
    async with harness.uow() as uow:
        payload = await uow.session.scalar(
            select(OUTBOX.c.payload).where(
                OUTBOX.c.key == str(event.data.ticket_id),
                OUTBOX.c.event_type == TicketClassified.cloudevent_type(),
            )
        )
    assert payload is not None, f"no ticket.classified for {text!r}"
    domain: str | None = payload["data"]["domain"]
    return domain


async def test_rules_apply_at_once_here_and_within_the_time_to_live_when_deleted_elsewhere(
    cfg: ServiceHarness,
) -> None:
    keyword, fallback = f"kw{uuid.uuid4().hex[:10]}", f"kw{uuid.uuid4().hex[:10]}"
    text = f"請問 {keyword} {fallback} 怎麼辦"

    async def add_rule(pattern: str, domain: str, priority: int) -> None:
        response = await cfg.client.post(
            "/v1/routing/rules",
            headers=ADMIN,
            json={"name": f"rule-{pattern}", "pattern": pattern, "domain": domain, "priority": priority},
        )
        assert response.status_code == 201, response.text

    # This database has no trained model: a rule of lower priority gives the text a domain once the
    # other is gone, so that the last check below sees the rule's absence, not a ticket without a domain.
    await add_rule(fallback, "life-insurance", priority=1)
    assert await classified_domain(cfg, text) == "life-insurance"  # the snapshot is loaded before the rule
    await add_rule(keyword, "auto-insurance", priority=2)
    assert await classified_domain(cfg, text) == "auto-insurance"

    async with cfg.uow() as uow:  # another replica deletes it
        await uow.session.execute(delete(RoutingRule).where(RoutingRule.name == f"rule-{keyword}"))
        await uow.commit()
    await asyncio.sleep(TTL + 0.05)
    assert await classified_domain(cfg, text) == "life-insurance"


async def test_starting_clocks_again_keeps_a_clock_that_already_moved(cfg: ServiceHarness) -> None:
    """The re-plan path: first response answered, then ticket.created handled again (a replay)."""
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    event = ticket_created(created_at=start)
    assert await handle(cfg, event)
    ticket_id = event.data.ticket_id
    assert await handle(cfg, delivered(ticket_id, start + timedelta(minutes=5)))
    async with cfg.uow() as uow:
        again = await sla.start_timers(uow, event.data, difficult=True, priority=Priority.URGENT)
        await uow.commit()
    assert again is not None
    # first response stopped: kept; resolution was paused (waiting on the customer): kept too
    assert again.policy_id == DEFAULT_POLICY
    assert again.first_response_due_at == CN.add_business_minutes(start, 480)
    assert again.resolution_due_at == CN.add_working_days(start, 3)
