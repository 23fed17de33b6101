"""Run a coroutine to completion from synchronous code, whether or not this thread runs an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``factory()`` on a fresh event loop and return its result.

    Without a running loop in the calling thread the coroutine runs right here with ``asyncio.run``;
    inside a running loop (e.g. a sync helper called from an async test) it runs on a short-lived
    worker thread with its own loop, and the caller blocks until it is done. ``factory`` is called on
    the thread that runs the coroutine, so objects bound to a loop are created on the right loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(factory())
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="helpdesk-run-sync", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["value"]
    return result
