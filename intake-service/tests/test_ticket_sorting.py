"""`GET /v1/tickets?sort=`: by creation (as always), by last update and by priority rank, each way
round, paged by cursors that belong to their sort."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text as sa_text
from sqlalchemy import update
from sqlalchemy.dialects import postgresql

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.pagination import PageParams, encode_cursor
from helpdesk_shared.contracts.enums import Priority
from intake_service.models import Ticket
from intake_service.repository import TicketFilters, TicketRepository

CHANNEL = auth_headers("channel", sub="sorting-portal")
LEAD = auth_headers("lead")
PRIORITIES = ["normal", "urgent", "low", "high", "urgent", "normal", "high", "low"]
UPDATED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def tickets(intake: ServiceHarness) -> tuple[str, list[dict[str, Any]]]:
    """Tickets of every priority (two of each) found by a marker, with last-update times of their
    own: two share one (their order is the id's), and the order differs from creation's."""
    marker = uuid.uuid4().hex[:10]
    made = []
    for n, priority in enumerate(PRIORITIES):
        response = await intake.client.post(
            "/v1/tickets",
            headers=CHANNEL,
            json={
                "channel": "web",
                "kind": "question",
                "priority": priority,
                "subject": f"排序 {marker} {n}",
                "description": "保單問題",
                "customer": {"external_id": f"c-{uuid.uuid4()}"},
            },
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    minutes = [5, 3, 7, 3, 0, 6, 1, 2]
    async with intake.uow() as uow:
        for ticket, minute in zip(made, minutes, strict=True):
            ticket["updated_at"] = UPDATED + timedelta(minutes=minute)
            await uow.session.execute(
                update(Ticket)
                .where(Ticket.id == uuid.UUID(ticket["id"]))
                .values(updated_at=ticket["updated_at"])
            )
        await uow.commit()
    for ticket in made:
        ticket["created_at"] = datetime.fromisoformat(ticket["created_at"])
    return marker, made


def expected(made: list[dict[str, Any]], sort: str) -> list[str]:
    field = sort.lstrip("-")

    def key(t: dict[str, Any]) -> tuple[Any, ...]:
        if field == "priority":
            return (Priority(t["priority"]).rank, t["created_at"], uuid.UUID(t["id"]))
        return (t[field], uuid.UUID(t["id"]))

    return [t["id"] for t in sorted(made, key=key, reverse=sort.startswith("-"))]


async def pages(intake: ServiceHarness, marker: str, sort: str, limit: int = 3) -> list[list[str]]:
    found, cursor = [], None
    while True:
        params = {"q": marker, "sort": sort, "limit": limit} | ({"cursor": cursor} if cursor else {})
        response = await intake.client.get("/v1/tickets", headers=LEAD, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.append([t["id"] for t in page["items"]])
        if (cursor := page["next_cursor"]) is None:
            return found


@pytest.mark.parametrize(
    "sort", ["-created_at", "created_at", "-updated_at", "updated_at", "-priority", "priority"]
)
async def test_each_sort_pages_through_every_ticket_once_in_its_order(
    intake: ServiceHarness, tickets: tuple[str, list[dict[str, Any]]], sort: str
) -> None:
    marker, made = tickets

    found = await pages(intake, marker, sort)

    assert [ticket for page in found for ticket in page] == expected(made, sort)
    assert [len(page) for page in found] == [3, 3, 2]


async def test_priority_goes_by_rank_then_creation(tickets: tuple[str, list[dict[str, Any]]]) -> None:
    _, made = tickets
    by_id = {t["id"]: t for t in made}
    ordered = [by_id[i]["priority"] for i in expected(made, "-priority")]
    assert ordered == ["urgent", "urgent", "high", "high", "normal", "normal", "low", "low"]
    # Within a priority, newest first that way round, oldest first the other.
    urgent = [by_id[i]["created_at"] for i in expected(made, "-priority")[:2]]
    assert urgent == sorted(urgent, reverse=True)


async def test_creation_cursors_keep_their_format(
    intake: ServiceHarness, tickets: tuple[str, list[dict[str, Any]]]
) -> None:
    # Cursors clients hold from before other sorts existed still page on.
    marker, made = tickets
    order = expected(made, "-created_at")
    by_id = {t["id"]: t for t in made}
    first = (await intake.client.get("/v1/tickets", headers=LEAD, params={"q": marker, "limit": 3})).json()
    third = by_id[order[2]]
    assert first["next_cursor"] == encode_cursor(third["created_at"], uuid.UUID(third["id"]))

    second = await intake.client.get(
        "/v1/tickets", headers=LEAD, params={"q": marker, "limit": 3, "cursor": first["next_cursor"]}
    )
    assert [t["id"] for t in second.json()["items"]] == order[3:6]


async def first_cursor(intake: ServiceHarness, marker: str, sort: str) -> str:
    page = (
        await intake.client.get("/v1/tickets", headers=LEAD, params={"q": marker, "sort": sort, "limit": 1})
    ).json()
    cursor: str = page["next_cursor"]
    return cursor


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [
        ("updated_at", "priority"),
        ("-priority", "priority"),
        ("priority", "-updated_at"),
        ("-updated_at", "updated_at"),
        ("-created_at", "updated_at"),
        ("-created_at", "-priority"),
        ("priority", "-created_at"),
        ("-updated_at", "created_at"),
    ],
)
async def test_a_cursor_of_another_sort_is_a_422(
    intake: ServiceHarness, tickets: tuple[str, list[dict[str, Any]]], issued_for: str, used_with: str
) -> None:
    marker, _ = tickets
    cursor = await first_cursor(intake, marker, issued_for)

    response = await intake.client.get(
        "/v1/tickets", headers=LEAD, params={"q": marker, "sort": used_with, "cursor": cursor}
    )

    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/invalid-cursor")


def forged(*values: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        ("priority", forged("priority", 7, "2026-12-01T00:00:00+00:00", str(uuid.uuid4()))),
        ("priority", forged("priority", True, "2026-12-01T00:00:00+00:00", str(uuid.uuid4()))),
        ("priority", forged("priority", 1, "2026-12-01T00:00:00+00:00")),
        ("-updated_at", forged("-updated_at", "2026-12-01T00:00:00", str(uuid.uuid4()))),  # no offset
        ("-updated_at", forged("-updated_at", "9999-12-31T23:00:00-05:00", str(uuid.uuid4()))),
        ("-updated_at", forged("-updated_at", "2026-12-01T00:00:00Z", 12)),
        ("updated_at", "garbage!"),
        ("updated_at", forged({"sort": "updated_at"})),
    ],
)
async def test_a_malformed_cursor_of_the_new_sorts_is_a_422(
    intake: ServiceHarness, sort: str, cursor: str
) -> None:
    response = await intake.client.get("/v1/tickets", headers=LEAD, params={"sort": sort, "cursor": cursor})
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/invalid-cursor")


async def test_an_unknown_sort_is_a_422(intake: ServiceHarness) -> None:
    response = await intake.client.get("/v1/tickets", headers=LEAD, params={"sort": "-number"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.sort"


async def test_channels_sort_too(intake: ServiceHarness, tickets: tuple[str, list[dict[str, Any]]]) -> None:
    marker, made = tickets
    response = await intake.client.get(
        "/v1/tickets", headers=CHANNEL, params={"q": marker, "sort": "-priority", "limit": 50}
    )
    assert [t["id"] for t in response.json()["items"]] == expected(made, "-priority")


@pytest.mark.parametrize("cursor", [False, True], ids=["first-page", "next-page"])
async def test_the_priority_sort_reads_each_priority_through_its_index(
    intake: ServiceHarness, cursor: bool
) -> None:
    # A branch per priority, each an index range cut at the page size, instead of a sort of every
    # ticket by rank for each page; after a cursor, the priorities it is past are not read at all.
    position = forged("-priority", Priority.HIGH.rank, "2026-12-01T00:00:00+00:00", str(uuid.uuid4()))
    params = PageParams(limit=50, cursor=position if cursor else None)
    query = TicketRepository.page_query(params, TicketFilters(sort="-priority"))
    sql = query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    async with intake.uow() as uow:
        await uow.session.execute(sa_text("SET LOCAL enable_seqscan = off"))  # as on a large table
        plan = "\n".join((await uow.session.execute(sa_text(f"EXPLAIN {sql}"))).scalars())
    read = {p.value for p in Priority if f"(priority)::text = '{p.value}'::text" in plan}
    assert read == ({"high", "normal", "low"} if cursor else {p.value for p in Priority}), plan
    # Each branch an index range cut at the page size. Which index serves a branch is the
    # planner's call on the statistics of the day: a priority most tickets have may be read
    # through the created_at index with a filter, as well bounded by its limit.
    assert plan.count("->  Limit") == len(read), plan
    assert plan.count("Index Scan") == len(read) and "Seq Scan" not in plan, plan
