"""Cross-service fixtures: the five services as real processes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpdesk_runtime._sync import run_sync
from helpdesk_runtime.kafka import ensure_topics
from helpdesk_runtime.procs import free_port
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.seed import seed_demo_data
from helpdesk_runtime.stack import SERVICES, Stack, migrate_all, provision_databases
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET
from helpdesk_shared.contracts.topics import ALL_TOPICS


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


@pytest.fixture(scope="session")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = launch_stack(
        infra, kafka_bootstrap=infra.kafka_bootstrap, log_dir=tmp_path_factory.mktemp("stack-logs")
    )
    try:
        yield running
    finally:
        running.stop()
