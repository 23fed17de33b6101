"""The local runtime's infrastructure: embedded PostgreSQL, a real Kafka broker, process helpers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import InvalidReplicationFactorError

from helpdesk_runtime import cli, paths
from helpdesk_runtime.kafka import KafkaBroker, MissingToolError, ensure_kafka_jars, ensure_topics
from helpdesk_runtime.postgres import EmbeddedPostgres, create_database, drop_database
from helpdesk_runtime.procs import port_open, start_process
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_shared.chassis.auth import TokenVerifier
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.contracts.enums import Role


async def _produce(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, expected: int, group_id: str | None = None) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    if group_id is None:
        consumer.assign([TopicPartition(topic, 0)])
    else:
        consumer.subscribe([topic])
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while len(got) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                got += [record.value for records in batch.values() for record in records]
        if group_id is not None:
            await consumer.commit()
        return got
    finally:
        await consumer.stop()


async def test_database_roundtrip(infra: Infra) -> None:
    # Called from a running loop on purpose: creation must not need (or disturb) this loop.
    url = infra.create_database("infra_check")
    assert url.endswith(f"/infra_check_{infra.run_id}")
    assert infra.create_database("infra_check") == url  # idempotent
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO t VALUES (1, 'héllo')")
        assert await conn.fetchval("SELECT note FROM t WHERE id = 1") == "héllo"
        assert await conn.fetchval("SELECT current_database()") == f"infra_check_{infra.run_id}"
    finally:
        await conn.close()


def test_module_level_create_database_without_loop(infra: Infra) -> None:
    name = f"plain_{infra.run_id}"
    url = create_database(infra.postgres_admin_url, name)
    try:
        assert url.rsplit("/", 1)[1] == name
        assert create_database(infra.postgres_admin_url, name) == url
    finally:
        drop_database(infra.postgres_admin_url, name)
    drop_database(infra.postgres_admin_url, name)  # absent: no error


async def test_produce_and_consume(infra: Infra) -> None:
    topic = f"infra-check-{infra.run_id}"
    infra.ensure_topics({topic: 3})
    infra.ensure_topics({topic: 3})  # existing topics are fine
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        assert len(described["partitions"]) == 3
    finally:
        await admin.close()

    await _produce(infra.kafka_bootstrap, topic, b"one", b"two")
    got = await _read_all(infra.kafka_bootstrap, topic, 2, group_id=f"infra-check-{infra.run_id}")
    assert got == [b"one", b"two"]  # same key → same partition → order kept


async def test_broker_restart_keeps_data(private_broker: KafkaBroker) -> None:
    broker = private_broker
    topic = "survivor"
    port, cport, bootstrap = broker.port, broker.controller_port, broker.bootstrap_servers
    await ensure_topics(bootstrap, {topic: 1})
    await _produce(bootstrap, topic, b"before")

    broker.stop()
    assert not broker.is_running()
    assert not port_open(port)
    broker.stop()  # idempotent

    broker.restart()
    assert (broker.port, broker.controller_port, broker.bootstrap_servers) == (port, cport, bootstrap)
    await ensure_topics(bootstrap, {topic: 1})  # still there: nothing to create
    await _produce(bootstrap, topic, b"after")
    assert await _read_all(bootstrap, topic, 2) == [b"before", b"after"]
    assert broker.log_path.read_text().count("Kafka Server started") == 2


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(
        MissingToolError, match=r"Java 17\+.*openjdk-17-jre-headless.*KAFKA_BOOTSTRAP_SERVERS"
    ):
        ensure_kafka_jars(tmp_path / "libs")


def test_missing_maven_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = subprocess.run(["which", "java"], capture_output=True, text=True, check=True).stdout.strip()
    only_java = tmp_path / "bin"
    only_java.mkdir()
    (only_java / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(only_java))
    with pytest.raises(MissingToolError, match=r"Maven.*apt-get install maven"):
        ensure_kafka_jars(tmp_path / "libs")


def test_repo_paths() -> None:
    root = paths.repo_root()
    assert (root / "services" / "kafka" / "pom.xml").is_file()
    assert paths.local_dir() == root / ".local"
    assert paths.kafka_libs_dir() == root / ".local" / "kafka" / "libs"
    assert paths.kafka_data_dir() == root / ".local" / "kafka" / "data"
    assert paths.pgdata_dir() == root / ".local" / "pgdata"


def test_postgres_restart_after_stale_pid(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "data", durable=False)
    pg.start()
    url = pg.create_database("keep")
    pg.stop()
    pg.stop()  # idempotent
    # A previous run killed hard leaves a lock file naming a pid that is not postgres any more.
    (pg.data_dir / "postmaster.pid").write_text(
        f"{os.getpid()}\n{pg.data_dir}\n0\n{pg.port}\n\n\n0 0\nready\n"
    )
    pg.start()
    try:
        assert pg.create_database("keep") == url  # the data survived

        async def query() -> int:
            conn = await asyncpg.connect(url)
            try:
                value: int = await conn.fetchval("SELECT 41 + 1")
                return value
            finally:
                await conn.close()

        assert asyncio.run(query()) == 42
    finally:
        pg.stop()


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` exits (or is a zombie nobody reaps) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time, threading
        from pathlib import Path
        from helpdesk_runtime.procs import start_process

        def spawn():  # from a short-lived thread: the child must outlive it
            proc = start_process(["sleep", "600"], log_path=Path({str(tmp_path / "sleep.log")!r}))
            print(proc.pid, flush=True)

        t = threading.Thread(target=spawn)
        t.start()
        t.join()
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    time.sleep(0.3)
    assert psutil.pid_exists(child_pid), "the child died with the thread that started it"
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    assert _gone_within(child_pid, 10), f"child {child_pid} survived its parent"


def test_stop_escalates_to_kill_and_reaps_the_group(tmp_path: Path) -> None:
    # A shell that ignores SIGTERM, with a grandchild in its process group.
    script = "trap '' TERM; sleep 600 & echo $!; wait"
    proc = start_process(["sh", "-c", script], log_path=tmp_path / "stubborn.log", name="stubborn")
    deadline = time.monotonic() + 5
    while not proc.log_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(proc.log_text().split()[0])
    began = time.monotonic()
    assert proc.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - began < 5
    assert not proc.is_running()
    assert _gone_within(grandchild, 5), "the grandchild in its process group survived"
    assert proc.stop() == -signal.SIGKILL  # idempotent


def test_make_token_mints_what_services_configured_from_the_same_environment_accept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # With an issuer or audience exported (as for an identity provider), make run's seed and
    # make token minted tokens every service refused.
    monkeypatch.setenv("HELPDESK_JWT_ISSUER", "https://id.example.com/")
    monkeypatch.setenv("HELPDESK_JWT_AUDIENCE", "helpdesk-api")
    monkeypatch.delenv("HELPDESK_JWT_SECRET", raising=False)
    assert cli.main(["token", "--role", "agent", "--sub", "u-1"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    verifier = TokenVerifier(ServiceSettings(database_url="postgresql://unused/unused"))
    principal = verifier.verify(token)
    assert (principal.subject, principal.roles) == ("u-1", frozenset({Role.AGENT}))


async def test_topics_are_created_with_the_replication_factor_asked_for(infra: Infra) -> None:
    # The single test broker cannot hold two copies: the broker's refusal shows the factor reached it.
    name = f"rf-check-{infra.run_id}"
    with pytest.raises(InvalidReplicationFactorError):
        await ensure_topics(infra.kafka_bootstrap, {name: 1}, timeout=10, replication_factor=2)
    await ensure_topics(infra.kafka_bootstrap, {name: 1}, timeout=30, replication_factor=1)
