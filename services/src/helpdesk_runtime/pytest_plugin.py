"""pytest plugin ``helpdesk_infra``: real PostgreSQL and a real Kafka broker for the test session.

* ``HELPDESK_TEST_POSTGRES_URL`` (an admin URL) → use that server; else an embedded PostgreSQL
  (``durable=False``) in a temporary directory on a free port.
* ``KAFKA_BOOTSTRAP_SERVERS`` → use that cluster; else a local broker on free ports with a temporary
  data dir (jars cached in ``.local/kafka/libs``).

What the fixture started it stops at session end. If the infrastructure cannot start the fixture
fails loudly; it never skips.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from helpdesk_runtime.kafka import KafkaBroker
    from helpdesk_runtime.postgres import EmbeddedPostgres

POSTGRES_URL_ENV = "HELPDESK_TEST_POSTGRES_URL"
KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"


@dataclass
class Infra:
    """What the test session runs against."""

    postgres_admin_url: str
    kafka_bootstrap: str
    broker: KafkaBroker | None = None
    """The broker this session started (``None`` when ``KAFKA_BOOTSTRAP_SERVERS`` was given)."""
    postgres: EmbeddedPostgres | None = None
    """The server this session started (``None`` when ``HELPDESK_TEST_POSTGRES_URL`` was given)."""
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    """Short random token unique to this session; use it to suffix topics or consumer groups too."""
    startup_seconds: float = 0.0
    created_databases: list[str] = field(default_factory=list)

    def database_name(self, name: str) -> str:
        """``name`` made unique to this session (what ``create_database`` creates)."""
        return f"{name}_{self.run_id}"

    def create_database(self, name: str) -> str:
        """Create (once per session) a database unique to this session; return its plain URL."""
        from helpdesk_runtime.postgres import create_database

        unique = self.database_name(name)
        url = create_database(self.postgres_admin_url, unique, exist_ok=True)
        if unique not in self.created_databases:
            self.created_databases.append(unique)
        return url

    def ensure_topics(self, topics: dict[str, int], timeout: float = 30.0) -> None:
        """Create missing topics (name → partitions); callable with or without a running loop."""
        from helpdesk_runtime._sync import run_sync
        from helpdesk_runtime.kafka import ensure_topics

        run_sync(lambda: ensure_topics(self.kafka_bootstrap, topics, timeout=timeout))


def start_private_broker(tmp_path: Path, *, timeout: float = 60.0) -> KafkaBroker:
    """Start a broker of your own (free ports, data under ``tmp_path``) that a test may stop/restart.

    The caller stops it (``broker.stop()``); the ``private_broker`` fixture does that for you.
    """
    from helpdesk_runtime import paths
    from helpdesk_runtime.kafka import FAST_START_JVM_OPTIONS, KafkaBroker

    broker = KafkaBroker(
        tmp_path / "kafka", paths.kafka_libs_dir(), heap="512m", jvm_options=FAST_START_JVM_OPTIONS
    )
    broker.start(timeout)
    return broker


def _external_postgres(url: str) -> str:
    from helpdesk_runtime.postgres import ping

    try:
        ping(url)
    except Exception as exc:
        raise RuntimeError(f"{POSTGRES_URL_ENV}={url} is not reachable: {exc!r}") from exc
    return url


def _external_kafka(bootstrap: str) -> str:
    from helpdesk_runtime._sync import run_sync
    from helpdesk_runtime.kafka import wait_kafka_ready

    run_sync(lambda: wait_kafka_ready(bootstrap, 30.0))
    return bootstrap


@contextlib.contextmanager
def start_infra(base: Path, *, broker_jvm_options: Sequence[str] | None = None) -> Iterator[Infra]:
    """Start (or connect to) PostgreSQL and Kafka per the environment; stop what was started.

    The broker starts with the tests' JVM options (quick to boot, slower to serve) unless
    ``broker_jvm_options`` says otherwise — a latency benchmark wants `make run`'s."""
    from helpdesk_runtime.postgres import EmbeddedPostgres, drop_database

    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        broker: KafkaBroker | None = None
        bootstrap = os.environ.get(KAFKA_ENV, "").strip()
        if not bootstrap:
            from helpdesk_runtime import paths
            from helpdesk_runtime.kafka import FAST_START_JVM_OPTIONS, KafkaBroker

            broker = KafkaBroker(
                base / "kafka",
                paths.kafka_libs_dir(),
                jvm_options=FAST_START_JVM_OPTIONS if broker_jvm_options is None else broker_jvm_options,
            )
            stack.callback(broker.stop)
            broker.launch()  # the JVM boots while PostgreSQL starts

        pg: EmbeddedPostgres | None = None
        admin_url = os.environ.get(POSTGRES_URL_ENV, "").strip()
        if admin_url:
            _external_postgres(admin_url)
        else:
            # Not under pytest's basetemp: a later pytest run chmods that to 0700, which would lock
            # out the unprivileged user PostgreSQL runs as when we are root.
            pg_base = Path(tempfile.mkdtemp(prefix="helpdesk-pg-"))
            stack.callback(shutil.rmtree, pg_base, True)
            pg = EmbeddedPostgres(pg_base / "data", durable=False)
            stack.callback(pg.stop)
            pg.start()
            admin_url = pg.admin_url

        if broker is not None:
            broker.wait_started()
            bootstrap = broker.bootstrap_servers
        _external_kafka(bootstrap)

        infra = Infra(admin_url, bootstrap, broker=broker, postgres=pg)
        infra.startup_seconds = time.monotonic() - began
        if pg is None:  # a shared server: leave it as we found it

            def drop_created() -> None:
                for name in infra.created_databases:
                    with contextlib.suppress(Exception):
                        drop_database(admin_url, name)

            stack.callback(drop_created)
        yield infra


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Real PostgreSQL + Kafka for the session (see the module docstring)."""
    base = tmp_path_factory.mktemp("infra")
    cm = start_infra(base)
    try:
        started = cm.__enter__()
    except Exception as exc:
        pytest.fail(f"test infrastructure could not start: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        yield started
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of the test's own, stopped afterwards; for tests that stop/restart/kill it."""
    try:
        broker = start_private_broker(tmp_path)
    except Exception as exc:
        pytest.fail(f"private Kafka broker could not start: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
