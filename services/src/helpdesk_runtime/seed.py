"""Demo data for a local stack: one team with a lead, specialists and a reviewer.

Seeded through the services' own APIs (never their databases), with fixed ids
so `make token SUB=<id>` can act as one of them. Re-running is harmless: what
exists answers 409 and is left alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from helpdesk_shared.chassis.auth import mint_token

TEAM_NAME = "線上答疑一組"
LEAD_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


@dataclass(frozen=True)
class DemoAgent:
    id: uuid.UUID
    name: str
    roles: tuple[str, ...]
    domains: tuple[str, ...]
    max_concurrent: int = 5


DEMO_AGENTS: tuple[DemoAgent, ...] = (
    DemoAgent(LEAD_ID, "王組長", ("lead",), ("life-insurance", "health-insurance", "auto-insurance"), 3),
    DemoAgent(
        uuid.UUID("00000000-0000-4000-8000-000000000002"),
        "李敏",
        ("specialist",),
        ("life-insurance", "annuities", "retirement-plans"),
    ),
    DemoAgent(
        uuid.UUID("00000000-0000-4000-8000-000000000003"),
        "陳浩",
        ("specialist",),
        ("auto-insurance", "home-insurance", "renters-insurance"),
    ),
    DemoAgent(
        uuid.UUID("00000000-0000-4000-8000-000000000004"),
        "張華",
        ("specialist", "reviewer"),
        ("health-insurance", "medicare-insurance", "critical-illness-insurance"),
    ),
)


class SeedError(RuntimeError):
    pass


def _check(response: httpx.Response) -> None:
    if response.status_code not in (200, 201, 409):
        raise SeedError(
            f"{response.request.method} {response.request.url} → {response.status_code}: "
            f"{response.text[:500]}"
        )


def dev_token(*, secret: str, subject: str, roles: Iterable[str], ttl_seconds: int = 12 * 3600) -> str:
    """A token the services started from this environment accept: they hold tokens to the
    exported HELPDESK_JWT_ISSUER and HELPDESK_JWT_AUDIENCE, so it carries those."""
    return mint_token(
        secret=secret,
        subject=subject,
        roles=roles,
        issuer=os.environ.get("HELPDESK_JWT_ISSUER") or "helpdesk",
        audience=os.environ.get("HELPDESK_JWT_AUDIENCE") or None,
        ttl_seconds=ttl_seconds,
    )


def seed_demo_data(routing_url: str, *, jwt_secret: str) -> None:
    token = dev_token(secret=jwt_secret, subject="seed", roles=["admin"], ttl_seconds=300)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=routing_url, headers=headers, timeout=10.0) as client:
        response = client.post("/v1/teams", json={"name": TEAM_NAME, "lead_id": str(LEAD_ID)})
        _check(response)
        teams = client.get("/v1/teams")
        _check(teams)
        team_id = next(t["id"] for t in teams.json() if t["name"] == TEAM_NAME)
        for agent in DEMO_AGENTS:
            _check(
                client.post(
                    "/v1/agents",
                    json={
                        "id": str(agent.id),
                        "name": agent.name,
                        "team_id": team_id,
                        "roles": list(agent.roles),
                        "domains": list(agent.domains),
                        "languages": ["zh", "en"],
                        "max_concurrent": agent.max_concurrent,
                        "presence": "online",
                    },
                )
            )
