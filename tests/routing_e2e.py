"""Support for the routing e2e tests: a stack of only the services a test needs, a tap on Kafka
that records every event as it arrives, a sampler of routing's agent list, and team builders.

Kept out of ``conftest.py`` because only the routing e2e tests use it.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from helpdesk_runtime._sync import run_sync
from helpdesk_runtime.kafka import ensure_topics
from helpdesk_runtime.postgres import create_database
from helpdesk_runtime.procs import free_port
from helpdesk_runtime.pytest_plugin import Infra
from helpdesk_runtime.stack import Stack, migrate_all
from helpdesk_runtime.testing import auth_headers
from helpdesk_shared.contracts import EventEnvelope, EventPayload, parse_event
from helpdesk_shared.contracts.topics import ALL_TOPICS, SERVICE_TOPIC, source_for

ADMIN = auth_headers("admin")
LEAD = auth_headers("lead")
CHANNEL = auth_headers("channel")

ALWAYS_OPEN = {
    "id": "always-open",
    "name": "24×7 (UTC): business minutes are wall minutes",
    "time_zone": "UTC",
    "weekly_hours": {str(day): [["00:00", "00:00"]] for day in range(7)},
}


def launch_services(infra: Infra, names: Sequence[str], *, log_dir: Path) -> Stack:
    """Only ``names`` as real processes, on fresh databases and topics unique to this stack."""
    tag = secrets.token_hex(3)
    prefix = f"r{tag}."
    run_sync(lambda: ensure_topics(infra.kafka_bootstrap, {prefix + t: n for t, n in ALL_TOPICS.items()}))
    urls = {}
    for name in names:
        database = f"helpdesk_{name}_e2e_{tag}"
        urls[name] = create_database(infra.postgres_admin_url, database)
        infra.created_databases.append(database)
    migrate_all(urls)
    stack = Stack(
        database_urls=urls,
        kafka_bootstrap=infra.kafka_bootstrap,
        log_dir=log_dir,
        ports={name: free_port() for name in names},
        topic_prefix=prefix,
        environment="test",
    )
    try:
        stack.start(timeout=90, names=names)
    except BaseException:
        stack.stop()
        raise
    return stack


def topic(stack: Stack, service: str) -> str:
    return stack.topic_prefix + SERVICE_TOPIC[service]


@dataclass(frozen=True)
class Seen:
    """One event as the tap received it."""

    envelope: EventEnvelope[Any]
    partition: int
    offset: int
    received: float
    """``time.time()`` when the tap got it."""

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def id(self) -> uuid.UUID:
        return self.envelope.id

    @property
    def data(self) -> Any:
        return self.envelope.data


class EventTap:
    """Every event on ``topics`` from the beginning, read on a thread of its own while a test runs.

    The outbox relays at least once: after a crash an event may arrive twice, with the same id.
    ``events()`` keeps every copy; ``unique()`` keeps the first copy of each id.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="event-tap", daemon=True)

    def __enter__(self) -> EventTap:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError("the event tap could not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                if consumer.assignment():
                    self._ready.set()
                received = time.time()
                seen = [
                    Seen(parse_event(orjson.loads(r.value)), r.partition, r.offset, received)
                    for records in batch.values()
                    for r in records
                ]
                with self._lock:
                    self._seen.extend(seen)
        finally:
            await consumer.stop()

    def events(self, *types: type[EventPayload]) -> list[Seen]:
        """Every copy received so far of events of these types (all types if none), in arrival order."""
        if self._error is not None:
            raise RuntimeError("the event tap failed") from self._error
        wanted = {t.cloudevent_type() for t in types}
        with self._lock:
            return [s for s in self._seen if not wanted or s.type in wanted]

    def unique(self, *types: type[EventPayload]) -> list[Seen]:
        """The first copy of each event id, in arrival order."""
        firsts: dict[uuid.UUID, Seen] = {}
        for seen in self.events(*types):
            firsts.setdefault(seen.id, seen)
        return list(firsts.values())

    def by_ticket(self, *types: type[EventPayload]) -> dict[uuid.UUID, list[Seen]]:
        grouped: dict[uuid.UUID, list[Seen]] = defaultdict(list)
        for seen in self.unique(*types):
            grouped[seen.data.ticket_id].append(seen)
        return grouped

    def wait(self, check: Callable[[EventTap], Any], *, within: float, what: str = "condition") -> Any:
        deadline = time.monotonic() + within
        while True:
            result = check(self)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen within {within}s (last: {result!r})")
            time.sleep(0.005)


class AgentSampler:
    """Polls routing's ``GET /v1/agents`` on a thread while a test runs; remembers each agent's peak.

    Only a transport error (routing down or restarting) is skipped. Any other failure — an error
    status (401, 500, …) or an unexpected body — stops the sampler and is raised when the ``with``
    block ends: a sampler that took no samples must not pass for one that saw nobody over capacity.
    """

    def __init__(self, routing_url: str, *, interval: float = 0.02) -> None:
        self._url = routing_url
        self._interval = interval
        self.samples = 0
        self.peak: dict[str, int] = defaultdict(int)
        self.over_capacity: list[dict[str, Any]] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-sampler", daemon=True)

    def __enter__(self) -> AgentSampler:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._error is not None and exc is None:
            raise AssertionError(f"the agent sampler failed after {self.samples} samples") from self._error

    def _run(self) -> None:
        try:
            self._sample()
        except BaseException as exc:
            self._error = exc

    def _sample(self) -> None:
        with httpx.Client(base_url=self._url, headers=LEAD, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    agents = list_agents(client)
                except httpx.TransportError:  # routing is down or restarting; a bad status is raised
                    time.sleep(0.1)
                    continue
                self.samples += 1
                for agent in agents:
                    self.peak[agent["id"]] = max(self.peak[agent["id"]], agent["active_tickets"])
                    if agent["active_tickets"] > agent["max_concurrent"]:
                        self.over_capacity.append(agent)
                self._stop.wait(self._interval)


def list_agents(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/v1/agents", params={"limit": 100}, headers=LEAD)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def active_tickets(routing_url: str) -> dict[str, int]:
    with httpx.Client(base_url=routing_url, timeout=5) as client:
        return {a["id"]: a["active_tickets"] for a in list_agents(client)}


@dataclass
class Team:
    id: str
    lead_id: str
    specialists: list[str] = field(default_factory=list)


def create_team(routing_url: str, *, specialists: int, capacity: int, lead_capacity: int) -> Team:
    """A team of its own: a lead (role lead only: takes difficult tickets) and specialists."""
    lead_id = str(uuid.uuid4())
    with httpx.Client(base_url=routing_url, headers=ADMIN, timeout=10) as client:
        created = client.post("/v1/teams", json={"name": f"答疑組-{lead_id[:8]}", "lead_id": lead_id})
        assert created.status_code == 201, created.text
        team = Team(id=created.json()["id"], lead_id=lead_id)
        members = [(lead_id, "組長", ["lead"], lead_capacity)] + [
            (str(uuid.uuid4()), f"專員{n}", ["specialist"], capacity) for n in range(1, specialists + 1)
        ]
        for agent_id, name, roles, max_concurrent in members:
            response = client.post(
                "/v1/agents",
                json={
                    "id": agent_id,
                    "name": name,
                    "team_id": team.id,
                    "roles": roles,
                    "domains": ["life-insurance", "auto-insurance", "health-insurance"],
                    "languages": ["zh", "en"],
                    "max_concurrent": max_concurrent,
                    "presence": "online",
                },
            )
            assert response.status_code == 201, response.text
            if "specialist" in roles:
                team.specialists.append(agent_id)
    return team


def create_sla_policy(routing_url: str, **fields: Any) -> dict[str, Any]:
    """The 24×7 calendar (created once) and a policy on it that takes precedence over the defaults."""
    with httpx.Client(base_url=routing_url, headers=ADMIN, timeout=10) as client:
        calendar = client.post("/v1/sla/calendars", json=ALWAYS_OPEN)
        assert calendar.status_code in (201, 409), calendar.text
        body = {
            "name": f"e2e-{uuid.uuid4().hex[:8]}",
            "precedence": 0,
            "calendar_id": ALWAYS_OPEN["id"],
            "pause_when_waiting_on_customer": False,
        } | fields
        policy = client.post("/v1/sla/policies", json=body)
        assert policy.status_code == 201, policy.text
        created: dict[str, Any] = policy.json()
        return created


QUESTIONS = (
    ("車險續保問題", "我的車險下個月到期，想知道續保需要準備什麼資料。"),
    ("壽險保費繳納", "想了解壽險保費可以按月繳納嗎？有沒有手續費？"),
    ("醫療險理賠", "住院的醫療費用要怎麼申請理賠？需要哪些單據？"),
    ("保單地址變更", "我搬家了，保單上的通訊地址要怎麼修改？"),
    ("年金險領取", "年金保險到期後，領取方式有哪幾種可以選？"),
)


def ticket_body(n: int, *, priority: str = "normal", kind: str = "question") -> dict[str, Any]:
    """A ticket as a channel posts it; no urgent words, so its priority stays the one given."""
    subject, description = QUESTIONS[n % len(QUESTIONS)]
    if kind == "complaint":
        subject, description = "投訴：理賠員態度不好", "電話裡理賠員對我很不耐煩，要求主管處理。"
    return {
        "channel": ("web", "app", "chat", "api")[n % 4],
        "kind": kind,
        "priority": priority,
        "subject": f"{subject} #{n}",
        "description": description,
        "customer": {"external_id": f"routing-e2e-{n}-{uuid.uuid4().hex[:6]}"},
    }


async def post_tickets(
    intake_url: str, bodies: Sequence[dict[str, Any]], *, concurrency: int = 8
) -> list[dict[str, Any]]:
    """POST every body to intake, ``concurrency`` at a time; the created tickets in body order."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=intake_url, headers=CHANNEL, timeout=15) as client:

        async def post(body: dict[str, Any]) -> dict[str, Any]:
            async with limit:
                response = await client.post("/v1/tickets", json=body)
            assert response.status_code == 201, response.text
            created: dict[str, Any] = response.json()
            return created

        return list(await asyncio.gather(*(post(b) for b in bodies)))


def intake_tickets(client: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    """Every ticket intake lists with these filters (all pages)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 100, **filters} | ({"cursor": cursor} if cursor else {})
        response = client.get("/v1/tickets", params=params, headers=LEAD)
        response.raise_for_status()
        page = response.json()
        items += page["items"]
        if not (cursor := page["next_cursor"]):
            return items


class TicketFlow:
    """Posts tickets to intake from a thread of its own, ``rate`` per second, until ``stop()``."""

    def __init__(
        self, intake_url: str, make_body: Callable[[int], dict[str, Any]], *, rate: float, limit: int = 1000
    ) -> None:
        self._url = intake_url
        self._make_body = make_body
        self._rate = rate
        self._limit = limit
        self._created: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ticket-flow", daemon=True)

    def __enter__(self) -> TicketFlow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def flowing(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    @property
    def created(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._created)

    def stop(self) -> list[dict[str, Any]]:
        """Stop posting; every ticket created (raises what went wrong on the thread, if anything)."""
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise AssertionError("the ticket flow failed") from self._error
        return self.created

    def _run(self) -> None:
        began = time.monotonic()
        try:
            with httpx.Client(base_url=self._url, headers=CHANNEL, timeout=15) as client:
                for n in range(self._limit):
                    if self._stop.wait(max(0.0, began + n / self._rate - time.monotonic())):
                        return
                    response = client.post("/v1/tickets", json=self._make_body(n))
                    assert response.status_code == 201, response.text
                    with self._lock:
                        self._created.append(response.json())
        except BaseException as exc:
            self._error = exc


def resolve_as_assignee(client: httpx.Client, ticket_id: uuid.UUID | str, agent_id: str) -> dict[str, Any]:
    """Resolve through intake as the assignee; waits (403) until intake shows routing's assignment."""
    deadline = time.monotonic() + 10
    while True:
        response = client.post(
            f"/v1/tickets/{ticket_id}/resolve", headers=auth_headers("agent", sub=agent_id)
        )
        if response.status_code != 403 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert response.status_code == 200, response.text
    resolved: dict[str, Any] = response.json()
    return resolved


class TicketInjector:
    """Publishes ``ticket.created`` exactly as intake's outbox relay does (same envelope, topic, key,
    headers), for tests that need a ticket intake cannot make, e.g. one accepted some time ago."""

    def __init__(self, bootstrap: str, intake_topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = intake_topic

    async def publish(self, payloads: Sequence[EventPayload]) -> list[EventEnvelope[Any]]:
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, enable_idempotence=True, linger_ms=2)
        await producer.start()
        try:
            envelopes = [
                EventEnvelope.wrap(p, source=source_for("intake"), subject=p.aggregate_id()) for p in payloads
            ]
            acks = [
                await producer.send(
                    self._topic,
                    value=orjson.dumps(e.model_dump(mode="json")),
                    key=(e.subject or "").encode(),
                    headers=[("ce_type", e.type.encode()), ("ce_id", str(e.id).encode())],
                )
                for e in envelopes
            ]
            await asyncio.gather(*acks)
            return envelopes
        finally:
            await producer.stop()
