"""The broker's jars, fetched once from Maven Central with ``mvn``; checks for Java and Maven."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

from helpdesk_runtime import paths
from helpdesk_runtime.procs import ProcessStartError

log = logging.getLogger(__name__)

MARKER_NAME = ".complete"
ENV_HINT = (
    "Alternatively point the runtime at an existing Kafka cluster with "
    "KAFKA_BOOTSTRAP_SERVERS=host:port (and at existing PostgreSQL with the *_DATABASE_URL variables)."
)


class MissingToolError(RuntimeError):
    """A program needed to run the local broker (Java, Maven) is not installed."""


class KafkaStartError(ProcessStartError):
    """The broker could not be fetched, formatted or started; the message carries the log tail."""


@functools.cache
def _java_major(java: str) -> int | None:
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> str:
    """Path of a ``java`` 17+ on PATH, else ``MissingToolError`` naming what to install."""
    java = shutil.which("java")
    if java is None:
        raise MissingToolError(
            "Java was not found on PATH: the local Kafka broker needs Java 17+ "
            "(e.g. apt-get install openjdk-17-jre-headless). " + ENV_HINT
        )
    major = _java_major(java)
    if major is not None and major < 17:
        raise MissingToolError(
            f"{java} is Java {major}; the local Kafka broker needs Java 17+ "
            "(e.g. apt-get install openjdk-17-jre-headless). " + ENV_HINT
        )
    return java


def require_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingToolError(
            "Maven was not found on PATH: it fetches the Kafka broker jars once from Maven Central "
            "(apt-get install maven). " + ENV_HINT
        )
    return mvn


def ensure_kafka_jars(libs_dir: Path | None = None, *, pom: Path | None = None, timeout: float = 600) -> Path:
    """Fetch the broker jars into ``libs_dir`` with Maven unless a completion marker says they are there.

    The marker holds the pom's hash, so editing the pom (e.g. the Kafka version) refetches. A file lock
    serialises concurrent callers (parallel test runs). Returns ``libs_dir``.
    """
    libs_dir = (libs_dir or paths.kafka_libs_dir()).resolve()
    pom = (pom or paths.kafka_pom()).resolve()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = libs_dir / MARKER_NAME

    def done() -> bool:
        return marker.is_file() and marker.read_text().strip() == digest

    if done():
        return libs_dir
    require_java()
    mvn = require_maven()
    libs_dir.parent.mkdir(parents=True, exist_ok=True)
    with (libs_dir.parent / f".{libs_dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done():
            return libs_dir
        staging = libs_dir.parent / f".{libs_dir.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        log.info("fetching Kafka broker jars with Maven into %s (once)", libs_dir)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]  # fmt: skip
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            msg = f"Maven did not finish fetching the Kafka jars within {timeout:.0f}s"
            raise KafkaStartError(msg) from exc
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            output = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            msg = f"Maven failed to fetch the Kafka jars (exit {result.returncode}):\n{output}"
            raise KafkaStartError(msg)
        shutil.rmtree(libs_dir, ignore_errors=True)
        staging.rename(libs_dir)
        marker.write_text(digest + "\n")
    return libs_dir
