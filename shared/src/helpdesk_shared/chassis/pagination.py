"""Cursor (keyset) pagination: `?limit=&cursor=` → `{"items": [...], "next_cursor": ...}`.

The cursor is an opaque, URL-safe token holding the sort key of the last
item returned; the next page starts strictly after it. Unlike offsets it stays
correct while new rows arrive and costs one index range scan per page.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import QueryableAttribute

from helpdesk_shared.chassis.problems import InvalidInput

T = TypeVar("T")
S = TypeVar("S", bound=Select[Any])

MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= to get the next page")


class PageParams(BaseModel):
    limit: int
    cursor: str | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="From a previous next_cursor")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


class InvalidCursor(InvalidInput):
    slug, title = "invalid-cursor", "Invalid pagination cursor"


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), str(row_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The sort key a cursor holds. One that decodes but was never issued (every issued time has
    a UTC offset and a UTC reading) is as malformed as garbage: a time without an offset would be
    read in whatever zone the driver assumes, and one past year 9999 in UTC is refused by the
    database as a value "that could not be stored"."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        moment = datetime.fromisoformat(created)
        if moment.utcoffset() is None:
            raise ValueError("no UTC offset")
        moment.astimezone(UTC)
        return moment, uuid.UUID(row_id)
    except (
        binascii.Error,
        ValueError,
        TypeError,
        AttributeError,
        OverflowError,
        orjson.JSONDecodeError,
    ) as exc:
        raise InvalidCursor("The cursor is malformed; start again without it") from exc


def keyset_page(
    stmt: S,
    *,
    created_col: ColumnElement[datetime] | QueryableAttribute[datetime],
    id_col: ColumnElement[uuid.UUID] | QueryableAttribute[uuid.UUID],
    params: PageParams,
    descending: bool = True,
) -> S:
    """Apply keyset ordering, the cursor bound and limit+1 (to detect a next page)."""
    if params.cursor:
        created, row_id = decode_cursor(params.cursor)
        if descending:
            bound = or_(created_col < created, and_(created_col == created, id_col < row_id))
        else:
            bound = or_(created_col > created, and_(created_col == created, id_col > row_id))
        stmt = stmt.where(bound)
    order = (created_col.desc(), id_col.desc()) if descending else (created_col.asc(), id_col.asc())
    return stmt.order_by(*order).limit(params.limit + 1)


def build_page(rows: list[Any], params: PageParams, *, key: Any) -> tuple[list[Any], str | None]:
    """Split limit+1 rows into the page and the cursor of its last item (if more remain)."""
    if len(rows) <= params.limit:
        return rows, None
    page = rows[: params.limit]
    created, row_id = key(page[-1])
    return page, encode_cursor(created, row_id)
