"""Child processes that die with their parent, log to a file and stop gracefully; port helpers."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

PR_SET_PDEATHSIG = 1
T = TypeVar("T")

# Loaded once in the parent: calling dlopen between fork and exec is not safe in a threaded process.
_LIBC: ctypes.CDLL | None = (
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if sys.platform.startswith("linux")
    else None
)


class ProcessStartError(RuntimeError):
    """A child process exited or did not become ready; the message carries the tail of its log."""


def _pdeathsig_preexec(sig: int, parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when its parent dies (Linux).

    "Parent" is the *thread* that forked the child: see ``_Spawner``.
    """

    def preexec() -> None:
        if _LIBC is None:
            return
        _LIBC.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent already died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def tail(path: Path, lines: int = 40, *, start: int = 0) -> str:
    """The last ``lines`` lines of a text file (from byte offset ``start``), or a note if it is absent."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return f"(no log at {path})"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """A started child process, its log file and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int = 0
    """Size of the log file when this process started (the log may be appended across restarts)."""
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        """Everything this process wrote to its log so far."""
        return tail(self.log_path, lines=sys.maxsize, start=self.log_offset)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines, start=self.log_offset)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send ``stop_signal``, wait up to ``timeout`` s, then SIGKILL the process and its group.

        Idempotent; returns the exit code (``None`` if it could not be reaped).
        """
        if not self._exited_unreaped(0):
            self._signal(self.stop_signal)
            if not self._exited_unreaped(timeout):
                self._signal(signal.SIGKILL)
        return self._finish()

    def kill(self) -> int | None:
        """SIGKILL the process and its group right away (a crash, not a shutdown)."""
        self._signal(signal.SIGKILL)
        return self._finish()

    def _signal(self, sig: int) -> None:
        if self.popen.returncode is None:  # os.kill, not Popen.send_signal: that would reap first
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def _exited_unreaped(self, timeout: float) -> bool:
        """Whether the process exited (within ``timeout`` s), leaving it unreaped: while it is a
        zombie its pid, which is also its process group id, cannot be reused."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.returncode is not None:
                return True
            try:
                flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
                if os.waitid(os.P_PID, self.popen.pid, flags) is not None:
                    return True
            except ChildProcessError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _finish(self) -> int | None:
        self._exited_unreaped(5)
        if self.popen.returncode is None:
            # The child leads its own process group: kill whatever it left behind, then reap it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.returncode


class _Spawner:
    """One long-lived daemon thread that forks every child.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process. Forking
    from this thread (alive until the interpreter dies) keeps children alive when ``start_process``
    is called from short-lived threads (``asyncio.to_thread``, executors) yet kills them with us.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="helpdesk-spawner", daemon=True)
                self._thread.start()
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            fn, future = self._jobs.get()
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


_SPAWNER = _Spawner()


def start_process(
    args: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | int | None = None,
    death_signal: int = signal.SIGTERM,
    stop_signal: int = signal.SIGTERM,
) -> ManagedProcess:
    """Start ``args`` in its own process group with stdout+stderr appended to ``log_path``.

    The child gets ``death_signal`` from the kernel when this process dies, so no orphan survives
    a crashed or killed parent (safe to call from any thread). ``user`` runs the child as another
    system user (needs root).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0

    def spawn() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [os.fspath(a) for a in args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                user=user,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(death_signal, os.getpid()),
            )

    popen = _SPAWNER.run(spawn)
    return ManagedProcess(
        name=name or os.fspath(args[0]),
        popen=popen,
        log_path=log_path,
        log_offset=offset,
        stop_signal=stop_signal,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; tiny race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    proc: ManagedProcess | None = None,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until true; raise ``ProcessStartError`` on timeout or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if proc is not None and not proc.is_running():
            raise ProcessStartError(
                f"{proc.name} exited with code {proc.returncode} while waiting for {what}; "
                f"log {proc.log_path}:\n{proc.log_tail()}"
            )
        if time.monotonic() >= deadline:
            detail = f"; log {proc.log_path}:\n{proc.log_tail()}" if proc is not None else ""
            raise ProcessStartError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def wait_for_port(
    port: int, host: str = "127.0.0.1", *, timeout: float = 30.0, proc: ManagedProcess | None = None
) -> None:
    """Wait until ``host:port`` accepts connections (failing early if ``proc`` dies)."""
    wait_for(lambda: port_open(port, host), timeout=timeout, proc=proc, what=f"{host}:{port} to accept")


def wait_for_port_free(port: int, host: str = "127.0.0.1", *, timeout: float = 30.0) -> None:
    """Wait until nothing listens on ``host:port`` any more."""
    wait_for(lambda: not port_open(port, host), timeout=timeout, what=f"{host}:{port} to be released")
