"""FAQ candidates are listed newest first in keyset pages: every candidate is reachable."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from kb_service.models import FaqCandidate

EDITOR = auth_headers("kb_editor")


async def every_page(kb: ServiceHarness, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await kb.client.get("/v1/kb/faq-candidates", headers=EDITOR, params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_candidates_past_the_newest_200_are_reached_page_by_page(kb: ServiceHarness) -> None:
    # Older than anything the other tests add, so they sit at the end of the listing; a run of
    # them shares one created_at (a batch of approvals committed together) across page ends.
    base = datetime(2001, 1, 1, tzinfo=UTC)
    stamps = [base + timedelta(seconds=n) for n in range(200)] + [base - timedelta(days=1)] * 15
    rows = [
        {
            "answer_id": uuid.uuid4(),
            "answer_version": 1,
            "ticket_id": uuid.uuid4(),
            "domain": "auto-insurance",
            "question": "車險可以跨年度續保嗎？",
            "body": f"答覆 {n}",
            "status": "new",
            "approved_at": stamp,
            "created_at": stamp,
        }
        for n, stamp in enumerate(stamps)
    ]
    async with kb.uow() as uow:
        await uow.session.execute(pg_insert(FaqCandidate), rows)
        await uow.commit()
    ours = {str(r["answer_id"]) for r in rows}
    expected = [
        str(r["answer_id"])
        for r in sorted(rows, key=lambda r: (r["created_at"], r["answer_id"]), reverse=True)
    ]

    for limit in (200, 7):
        listed = await every_page(kb, limit)
        ids = [c["answer_id"] for c in listed]
        assert len(ids) == len(set(ids))
        assert [i for i in ids if i in ours] == expected
        assert ids[-len(expected) :] == expected  # nothing of the other tests is older


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


BAD_CURSORS = {
    "not base64": "garbage!",
    "not a list": cursor_of({"not": "a list"}),
    "one value": cursor_of(["2026-01-01T00:00:00+00:00"]),
    "not a time": cursor_of(["yesterday", str(uuid.uuid4())]),
    "not a uuid": cursor_of(["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
    "a number": cursor_of([20260101, str(uuid.uuid4())]),
    "no utc offset": cursor_of(["2026-01-01T00:00:00", str(uuid.uuid4())]),
    "before year 1 in utc": cursor_of(["0001-01-01T00:00:00+05:00", str(uuid.uuid4())]),
    "after year 9999 in utc": cursor_of(["9999-12-31T23:59:59-05:00", str(uuid.uuid4())]),
}


@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
async def test_a_bad_cursor_is_a_422_problem(kb: ServiceHarness, cursor: str) -> None:
    response = await kb.client.get("/v1/kb/faq-candidates", headers=EDITOR, params={"cursor": cursor})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/invalid-cursor")


async def test_an_overlong_cursor_is_a_422_problem(kb: ServiceHarness) -> None:
    response = await kb.client.get("/v1/kb/faq-candidates", headers=EDITOR, params={"cursor": "a" * 600})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
