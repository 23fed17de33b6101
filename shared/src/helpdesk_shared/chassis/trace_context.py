"""W3C Trace Context (level 1) `traceparent` values: a caller's read, continued, or a new one started.

`version-traceid-parentid-flags`, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
Kept to strings and one regular expression: the request middleware runs this on every request.
"""

from __future__ import annotations

import re
import secrets
from typing import NamedTuple

# The lookahead reads no further than the four fields: a later version may append fields of its
# own after a dash, and a long header costs no more than a short one.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?=-|\Z)")
_VERSION = "00"
_INVALID_VERSION = "ff"
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16
_SAMPLED = "01"


class TraceParent(NamedTuple):
    trace_id: str
    parent_id: str
    flags: str


def parse_traceparent(value: str) -> TraceParent | None:
    """The fields of a valid ``traceparent``; None for anything else (which is to be ignored)."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == _INVALID_VERSION or (version == _VERSION and match.end() != len(value)):
        return None
    if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_PARENT_ID:
        return None
    return TraceParent(trace_id, parent_id, flags)


def child_traceparent(parent: TraceParent) -> str:
    """The traceparent of work done for ``parent``: its trace, a parent-id of its own, and its
    sampled flag — the only flag version 00 defines; the others are zeroed when propagated."""
    flags = "01" if int(parent.flags, 16) & 1 else "00"
    return f"{_VERSION}-{parent.trace_id}-{secrets.token_hex(8)}-{flags}"


def new_traceparent() -> str:
    """The start of a new trace, sampled."""
    ids = secrets.token_hex(24)  # both ids from one call: what a request bringing no trace costs
    return f"{_VERSION}-{ids[:32]}-{ids[32:]}-{_SAMPLED}"


def continue_trace(traceparent: str | None) -> str:
    """The traceparent to work under for a caller (or an event) that sent ``traceparent``: a child
    of it when it is valid, else a new trace."""
    parent = None if traceparent is None else parse_traceparent(traceparent)
    return new_traceparent() if parent is None else child_traceparent(parent)


def trace_id_of(traceparent: str) -> str:
    """The trace-id of a traceparent made here (version 00: its fields sit at fixed offsets)."""
    return traceparent[3:35]
