"""The five services as separate uvicorn processes, on whatever infrastructure.

Used by `make run` (embedded PostgreSQL + local Kafka, fixed ports) and by the
end-to-end tests (free ports, a topic prefix per test run).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from helpdesk_runtime.postgres import create_database
from helpdesk_runtime.procs import ManagedProcess, ProcessStartError, start_process, wait_for_port_free
from helpdesk_shared.chassis.migrations import upgrade_database
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    default_port: int

    @property
    def package(self) -> str:
        return f"{self.name}_service"

    @property
    def env_prefix(self) -> str:
        return f"{self.name.upper()}_"

    @property
    def database_url_var(self) -> str:
        return f"{self.env_prefix}DATABASE_URL"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("intake", 8001),
    ServiceSpec("routing", 8002),
    ServiceSpec("review", 8003),
    ServiceSpec("kb", 8004),
    ServiceSpec("metrics", 8005),
)
SERVICE_BY_NAME = {s.name: s for s in SERVICES}


def provision_databases(admin_url: str, *, suffix: str = "") -> dict[str, str]:
    """One database per service on a server we administer; returns service → URL."""
    return {s.name: create_database(admin_url, f"helpdesk_{s.name}{suffix}") for s in SERVICES}


def migrate_all(database_urls: Mapping[str, str]) -> None:
    """Apply every service's migrations, one after the other: Alembic's `context` is process-global."""
    for name, url in database_urls.items():
        upgrade_database(url, SERVICE_BY_NAME[name].package)


@dataclass
class Stack:
    database_urls: Mapping[str, str]
    kafka_bootstrap: str
    log_dir: Path
    ports: Mapping[str, int] = field(default_factory=lambda: {s.name: s.default_port for s in SERVICES})
    topic_prefix: str = ""
    jwt_secret: str = DEV_JWT_SECRET
    environment: str = "local"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env_for(self, spec: ServiceSpec) -> dict[str, str]:
        env = dict(os.environ)
        # Services are long-running: let them cache compiled bytecode, so that a (re)start
        # takes about a second instead of recompiling every module each time.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(
            {
                spec.database_url_var: self.database_urls[spec.name],
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
                "HELPDESK_TOPIC_PREFIX": self.topic_prefix,
                "HELPDESK_JWT_SECRET": self.jwt_secret,
                "HELPDESK_ENV": self.environment,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start_service(self, name: str) -> ManagedProcess:
        spec = SERVICE_BY_NAME[name]
        proc = start_process(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"{spec.package}.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports[name]),
                "--no-access-log",
                "--no-proxy-headers",  # nothing reads the client's address: no X-Forwarded-* parsing
                "--timeout-graceful-shutdown",
                "5",
            ],
            log_path=self.log_dir / f"{name}.log",
            name=f"{name}-service",
            env=self.env_for(spec),
        )
        self.processes[name] = proc
        return proc

    def start(self, *, timeout: float = 90.0, names: Sequence[str] | None = None) -> None:
        """Start the services (all five, or only ``names``) and wait until each is ready."""
        chosen = list(names) if names is not None else [s.name for s in SERVICES]
        for name in chosen:
            self.start_service(name)
        self.wait_ready(timeout=timeout, names=chosen)

    def wait_ready(self, *, timeout: float = 90.0, names: list[str] | None = None) -> None:
        """Wait until each service reports every check ok: its database and Kafka (a degraded
        service, serving without the broker, is not what a fresh stack should start as)."""
        deadline = time.monotonic() + timeout
        pending = set(names or self.processes)
        last: dict[str, str] = {}
        with httpx.Client(timeout=3.0) as client:
            while pending:
                for name in sorted(pending):
                    proc = self.processes[name]
                    if not proc.is_running():
                        raise ProcessStartError(
                            f"{name} exited with code {proc.returncode}; "
                            f"log {proc.log_path}:\n{proc.log_tail()}"
                        )
                    try:
                        response = client.get(f"{self.url(name)}/readyz")
                        last[name] = response.text
                        if response.status_code == 200 and response.json()["status"] == "ready":
                            pending.discard(name)
                    except httpx.HTTPError as exc:
                        last[name] = repr(exc)
                if pending and time.monotonic() > deadline:
                    details = "\n".join(
                        f"- {n}: {last.get(n)}\n{self.processes[n].log_tail(15)}" for n in sorted(pending)
                    )
                    raise ProcessStartError(f"services not ready after {timeout:.0f}s:\n{details}")
                if pending:
                    time.sleep(0.2)

    def stop_service(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.stop(timeout=10.0)

    def kill_service(self, name: str) -> None:
        """SIGKILL one service: a crash, with no graceful shutdown (nothing flushed, no offsets committed)."""
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.kill()

    def restart(self, name: str, *, crash: bool = True, timeout: float = 90.0) -> ManagedProcess:
        """Stop one service and start it again on the same port and database; wait until it is ready.

        ``crash=True`` (the default) SIGKILLs it, as a crashed or OOM-killed process; ``crash=False``
        stops it gracefully (SIGTERM). Its log file is appended to, not replaced.
        """
        if crash:
            self.kill_service(name)
        else:
            self.stop_service(name)
        wait_for_port_free(self.ports[name], timeout=timeout)
        proc = self.start_service(name)
        self.wait_ready(timeout=timeout, names=[name])
        return proc

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=max(len(self.processes), 1)) as pool:
            list(pool.map(self.stop_service, list(self.processes)))
