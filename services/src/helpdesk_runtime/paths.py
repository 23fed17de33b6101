"""Where the local runtime keeps things: the repository root and its git-ignored ``.local`` folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

ROOT_MARKER = Path("services") / "kafka" / "pom.xml"
"""A file that only exists at the repository root: the pom the Kafka jars are fetched with."""


class RepoRootNotFoundError(RuntimeError):
    """The repository root (the directory holding ``services/kafka/pom.xml``) could not be found."""


def _walk_up(start: Path) -> Path | None:
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / ROOT_MARKER).is_file():
            return candidate
    return None


@cache
def repo_root() -> Path:
    """The repository root.

    ``HELPDESK_ROOT`` wins when set; otherwise walk up from this module (an editable install lives
    inside the repository), then from the current working directory.
    """
    override = os.environ.get("HELPDESK_ROOT")
    if override:
        root = Path(override).expanduser().resolve()
        if not (root / ROOT_MARKER).is_file():
            raise RepoRootNotFoundError(f"HELPDESK_ROOT={override} does not contain {ROOT_MARKER}")
        return root
    for start in (Path(__file__).parent, Path.cwd()):
        found = _walk_up(start)
        if found is not None:
            return found
    raise RepoRootNotFoundError(
        f"could not find the repository root (a directory containing {ROOT_MARKER}) above "
        f"{Path(__file__).parent} or {Path.cwd()}; set HELPDESK_ROOT"
    )


def local_dir() -> Path:
    """``<root>/.local``: git-ignored state of the local runtime."""
    return repo_root() / ".local"


def pgdata_dir() -> Path:
    """Data directory of the embedded PostgreSQL used by ``make run``."""
    return local_dir() / "pgdata"


def kafka_dir() -> Path:
    return local_dir() / "kafka"


def kafka_libs_dir() -> Path:
    """Cache of the broker jars fetched by Maven."""
    return kafka_dir() / "libs"


def kafka_data_dir() -> Path:
    """Log dirs, ``server.properties`` and cluster id of the broker used by ``make run``."""
    return kafka_dir() / "data"


def kafka_pom() -> Path:
    return repo_root() / ROOT_MARKER


def kafka_log4j_config() -> Path:
    return repo_root() / "services" / "kafka" / "log4j.properties"


def __getattr__(name: str) -> Path:
    # Module-level constants computed lazily so importing this module never fails.
    lazy: dict[str, Callable[[], Path]] = {
        "REPO_ROOT": repo_root,
        "LOCAL_DIR": local_dir,
        "PGDATA_DIR": pgdata_dir,
        "KAFKA_LIBS_DIR": kafka_libs_dir,
        "KAFKA_DATA_DIR": kafka_data_dir,
    }
    if name in lazy:
        return lazy[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
