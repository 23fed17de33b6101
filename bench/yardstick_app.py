"""The yardstick: a minimal FastAPI + asyncpg endpoint doing one INSERT per request.

It does none of the work intake does (auth, validation of a rich body, idempotency,
customer upsert, timeline, outbox); the benchmark reports intake relative to it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from pydantic import BaseModel


class Ticket(BaseModel):
    subject: str
    description: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["YARDSTICK_DATABASE_URL"], min_size=10, max_size=10)
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS yardstick_tickets "
            "(id uuid PRIMARY KEY, subject text NOT NULL, description text NOT NULL)"
        )
    app.state.pool = pool
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/tickets", status_code=201)
async def create(ticket: Ticket, request: Request) -> dict[str, str]:
    ticket_id = uuid.uuid4()
    async with request.app.state.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO yardstick_tickets (id, subject, description) VALUES ($1, $2, $3)",
            ticket_id,
            ticket.subject,
            ticket.description,
        )
    return {"id": str(ticket_id)}
