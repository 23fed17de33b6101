"""A real single-node Apache Kafka broker (KRaft) run from jars fetched with Maven; topic helpers."""

from __future__ import annotations

import base64
import logging
import re
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from helpdesk_runtime import paths
from helpdesk_runtime.kafka_admin import KafkaNotReadyError, ensure_topics, wait_kafka_ready
from helpdesk_runtime.kafka_jars import (
    KafkaStartError,
    MissingToolError,
    ensure_kafka_jars,
    require_java,
    require_maven,
)
from helpdesk_runtime.procs import (
    ManagedProcess,
    ProcessStartError,
    free_port,
    start_process,
    wait_for,
    wait_for_port,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "FAST_START_JVM_OPTIONS",
    "KafkaBroker",
    "KafkaNotReadyError",
    "KafkaStartError",
    "MissingToolError",
    "ensure_kafka_jars",
    "ensure_topics",
    "random_cluster_id",
    "require_java",
    "require_maven",
    "wait_kafka_ready",
]

STARTED_LINE = "Kafka Server started"


DEFAULT_JVM_OPTIONS: tuple[str, ...] = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
"""JIT and GC as Kafka's own scripts run them (G1): for ``make run`` and benchmarks."""
FAST_START_JVM_OPTIONS: tuple[str, ...] = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
"""C1 JIT only and the serial GC: starts ~1 s sooner, plenty for tests, lower peak throughput."""


class KafkaBroker:
    """A single-node KRaft broker+controller on 127.0.0.1, its data (and cluster id) in ``data_dir``.

    Ports are fixed at construction (free ones when not given) so ``restart()`` reuses them.
    """

    def __init__(
        self,
        data_dir: Path,
        libs_dir: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        *,
        log4j_config: Path | None = None,
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.libs_dir = (libs_dir or paths.kafka_libs_dir()).resolve()
        self.port = port if port is not None else free_port()
        self.controller_port = controller_port if controller_port is not None else free_port()
        self.heap = heap
        self.jvm_options = tuple(jvm_options)
        self.log4j_config = log4j_config or paths.kafka_log4j_config()
        self.log_path = self.data_dir / "broker.log"
        self._proc: ManagedProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_running() else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def _write_properties(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
        }
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        self.properties_path.write_text("# written by helpdesk_runtime.kafka; regenerated on start\n" + text)

    def _log4j_option(self) -> str:
        return f"-Dlog4j.configuration=file:{self.log4j_config}"

    def _java(self, main: str, *args: str, jvm_options: tuple[str, ...] = ()) -> list[str]:
        return [require_java(), *jvm_options, "-cp", f"{self.libs_dir}/*", main, *args]

    def _format_storage(self) -> None:
        """Format the log dir once; the cluster id is kept in ``data_dir/cluster.id`` for restarts."""
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        id_file = self.data_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(random_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        out = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "--ignore-formatted",
                       "-t", cluster_id, "-c", str(self.properties_path),
                       jvm_options=(*FAST_START_JVM_OPTIONS, self._log4j_option())),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            msg = f"StorageTool format failed (exit {out.returncode}):\n{out.stdout}{out.stderr}"
            raise KafkaStartError(msg)

    def start(self, timeout: float = 60.0) -> None:
        """Fetch jars if needed, format storage once, start the JVM, wait for "Kafka Server started"."""
        self.launch()
        self.wait_started(timeout)

    def launch(self) -> None:
        """The non-waiting half of ``start()``: prepare and spawn the JVM (lets callers overlap work)."""
        if self.is_running():
            return
        ensure_kafka_jars(self.libs_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self._format_storage()
        jvm = (
            f"-Xmx{self.heap}", f"-Xms{_min_heap(self.heap)}", *self.jvm_options,
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            self._log4j_option(),
        )  # fmt: skip
        args = self._java("kafka.Kafka", str(self.properties_path), jvm_options=jvm)
        self._proc = start_process(args, log_path=self.log_path, name="kafka")

    def wait_started(self, timeout: float = 60.0) -> None:
        """Wait for "Kafka Server started" and the port; on failure stop and raise with the log tail."""
        proc = self._proc
        if proc is None:
            raise KafkaStartError("the broker was not launched")
        try:
            wait_for(lambda: STARTED_LINE in proc.log_text(), timeout=timeout, interval=0.05, proc=proc,
                     what=f"'{STARTED_LINE}' in the broker log")  # fmt: skip
            wait_for_port(self.port, timeout=max(5.0, timeout / 4), proc=proc)
        except ProcessStartError as exc:
            self.stop()
            raise KafkaStartError(f"Kafka broker failed to start on {self.bootstrap_servers}: {exc}") from exc

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL after ``timeout``. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the broker (simulates a crash; data may lose unflushed writes)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def random_cluster_id() -> str:
    """A cluster id as ``StorageTool random-uuid`` prints it: a random UUID in URL-safe base64."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like command-line flags
            return text


def _min_heap(heap: str) -> str:
    """Initial heap: 256m, or ``heap`` when that is smaller."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    match = re.fullmatch(r"(\d+)([kmgKMG]?)", heap)
    if match is None:
        return heap
    size = int(match.group(1)) * units.get(match.group(2).lower(), 1)
    return heap if size < 256 << 20 else "256m"
