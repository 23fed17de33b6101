"""Cross-service fixtures: the five services as real processes."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpdesk_runtime._sync import run_sync
from helpdesk_runtime.kafka import ensure_topics
from helpdesk_runtime.procs import free_port
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.seed import seed_demo_data
from helpdesk_runtime.stack import SERVICES, Stack, migrate_all, provision_databases
from helpdesk_runtime.testing import auth_headers
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET
from helpdesk_shared.contracts.topics import ALL_TOPICS

CHANNEL = auth_headers("channel")
LEAD = auth_headers("lead")


def launch_stack(infra: Infra, *, kafka_bootstrap: str, log_dir: Path, seed: bool = True) -> Stack:
    """Fresh databases and topics (unique to this stack), migrated, all services ready."""
    tag = secrets.token_hex(3)
    prefix = f"e{tag}."
    topics = {prefix + name: n for name, n in ALL_TOPICS.items()}
    run_sync(lambda: ensure_topics(kafka_bootstrap, topics))
    urls = provision_databases(infra.postgres_admin_url, suffix=f"_e2e_{tag}")
    infra.created_databases.extend(url.rsplit("/", 1)[-1] for url in urls.values())
    migrate_all(urls)
    stack = Stack(
        database_urls=urls,
        kafka_bootstrap=kafka_bootstrap,
        log_dir=log_dir,
        ports={s.name: free_port() for s in SERVICES},
        topic_prefix=prefix,
        environment="test",
    )
    try:
        stack.start(timeout=90)
        if seed:
            seed_demo_data(stack.url("routing"), jwt_secret=DEV_JWT_SECRET)
    except BaseException:
        stack.stop()
        raise
    return stack


WARM_UP_SECONDS = 90.0


def warm_up(stack: Stack, *, within: float = WARM_UP_SECONDS) -> None:
    """Post one ticket and wait until intake shows it assigned.

    ``/readyz`` does not wait for the consumer groups: a service may still be joining its group
    (the first assignment can take several seconds) when the first test posts a ticket and gives
    it five seconds. This fails loudly, naming the ticket, if the stack never gets there.
    """
    with httpx.Client(base_url=stack.url("intake"), timeout=10) as intake:
        created = intake.post(
            "/v1/tickets",
            headers=CHANNEL,
            json={
                "channel": "app",
                "kind": "question",
                "subject": "暖身：保單查詢",
                "description": "想確認保單目前的狀態。",
                "customer": {"external_id": f"warm-up-{uuid.uuid4()}"},
            },
        )
        if created.status_code != 201:
            pytest.fail(f"warm-up: intake refused a ticket ({created.status_code}): {created.text}")
        ticket_id = created.json()["id"]
        deadline = time.monotonic() + within
        shown: dict[str, object] = {}
        while time.monotonic() < deadline:
            response = intake.get(f"/v1/tickets/{ticket_id}", headers=LEAD)
            if response.status_code == 200:
                shown = response.json()
                if shown["assignee_id"]:
                    return
            time.sleep(0.1)
    pytest.fail(
        f"warm-up: ticket {ticket_id} not assigned {within:.0f}s after it was posted (last seen: {shown}); "
        f"the stack's consumers never got going — logs in {stack.log_dir}"
    )


@pytest.fixture(scope="session")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = launch_stack(
        infra, kafka_bootstrap=infra.kafka_bootstrap, log_dir=tmp_path_factory.mktemp("stack-logs")
    )
    try:
        warm_up(running)
        yield running
    finally:
        running.stop()
