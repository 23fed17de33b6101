"""Routing configuration held in memory for a few seconds, so that a new ticket reads none of it.

Classifying and timing a ticket needs the routing rules, the active classifier version, the SLA
policies and the business calendars: tiny tables that change a few times a day but were read four
times per ticket. Each :class:`ConfigCache` keeps one snapshot per database (in-process test
stacks run several routing databases side by side) and reloads it when it is older than the
time to live, ``ROUTING_CONFIG_CACHE_SECONDS`` (2 s by default; 0 reads the database every time).

**Staleness bound.** An edit made through this replica's API drops the snapshot when it commits,
so this replica applies it from its next ticket on. Every other replica applies it within the
time to live: a lead's rule, policy or calendar edit, or a retrain, is in force everywhere at
most ``ROUTING_CONFIG_CACHE_SECONDS`` after it was saved. Tickets already routed keep what they
were given (running SLA clocks keep their due times, as they always have).

A snapshot is read inside the caller's transaction when it has to be (re)loaded, and a load that
began before an invalidation is never kept as fresh (generation count), so an edit cannot be lost
to a reload racing with it.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

T = TypeVar("T")

DEFAULT_TTL_SECONDS = 2.0
_ttls: dict[str, float] = {}


def set_ttl(database: str, seconds: float) -> None:
    """The time to live of the snapshots of one database (from the service's settings, at start-up)."""
    if seconds < 0:
        raise ValueError("the configuration cache's time to live cannot be negative")
    _ttls[database] = seconds


def ttl(database: str) -> float:
    return _ttls.get(database, DEFAULT_TTL_SECONDS)


def database_key(session: AsyncSession) -> str:
    """Which database a session talks to: snapshots of different databases never mix."""
    return engine_key(session.get_bind().engine)


# An engine's URL never changes, and rendering it (~3 µs) was done several times per ticket.
_engine_keys: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def engine_key(engine: Engine | AsyncEngine) -> str:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    key = _engine_keys.get(sync_engine)
    if key is None:
        key = _engine_keys[sync_engine] = sync_engine.url.render_as_string(hide_password=True)
    return key


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    loaded_at: float
    generation: int


class ConfigCache(Generic[T]):
    """One configuration snapshot per database, reloaded by ``load`` once older than the TTL."""

    def __init__(self, name: str, load: Callable[[AsyncSession], Awaitable[T]]) -> None:
        self.name = name
        self._load = load
        self._entries: dict[str, _Entry[T]] = {}
        self._generations: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, session: AsyncSession) -> T:
        key = database_key(session)
        entry = self._fresh(key)
        if entry is not None:
            return entry.value
        async with self._locks.setdefault(key, asyncio.Lock()):  # one reload at a time, not one per ticket
            entry = self._fresh(key)
            if entry is not None:
                return entry.value
            generation = self._generations.get(key, 0)
            value = await self._load(session)
            if self._generations.get(key, 0) == generation and ttl(key) > 0:
                self._entries[key] = _Entry(value, time.monotonic(), generation)
            return value

    def invalidate(self, session: AsyncSession) -> None:
        """Drop the snapshot (after an edit committed): the next `get` reads the database."""
        key = database_key(session)
        self._generations[key] = self._generations.get(key, 0) + 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        for key in list(self._entries):
            self._generations[key] = self._generations.get(key, 0) + 1
        self._entries.clear()

    def _fresh(self, key: str) -> _Entry[T] | None:
        entry = self._entries.get(key)
        if entry is None or entry.generation != self._generations.get(key, 0):
            return None
        if time.monotonic() - entry.loaded_at >= ttl(key):
            return None
        return entry
