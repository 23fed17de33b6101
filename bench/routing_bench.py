"""Routing decision latency: ``ticket.created`` → ``ticket.assigned`` at a paced, sustained rate.

One routing process (one uvicorn worker, as `make run` starts it) on the embedded PostgreSQL and a
local Kafka broker. The benchmark plays intake: it publishes ``ticket.created`` CloudEvents exactly
as intake's outbox relay does (the shared envelope and ``TicketCreated`` payload, topic
``helpdesk.intake``, key = ticket id, idempotent producer with acks=all) at ``--rate`` per second,
and reads routing's decisions back from ``helpdesk.routing``. It hands them over in bursts, the
tickets due within each 10 ms together (``--burst-ms``), as intake's relay publishes what its passes
find (one pass per 25 ms at most, `INTAKE_OUTBOX_WAKE_INTERVAL_SECONDS`): a produce request per
ticket cost the load generator and the broker ~0.3 of the two cores routing shares with them
(interleaved 30 s runs: machine 1.24 and 1.32 → 0.93 and 1.03 cores busy, the load generator 0.2 →
0.12; p50 the same on a fast host). The events are built before the clock
starts, so that the load generator spends its share of the CPUs on sending, not on pydantic (their
``created_at`` is when they were built: it only moves SLA due times, hours away). The load generator
runs on uvloop, as the services do: on asyncio's own loop it took a fifth more CPU from the two
cores it shares with routing, PostgreSQL and the broker, and read decisions back later.

A ticket's latency is the time from handing its ``ticket.created`` to the producer to reading its
decision (``ticket.assigned`` or ``ticket.queued``) from Kafka: everything a downstream consumer
waits for — the broker, routing's consumer, classification (the production classifier, trained on
insuranceqa-zh `train` when ``../shared/data`` is there), SLA clocks, the assignment, the
transactional outbox and its relay. The breakdown also shows when routing made the decision (the
event's own ``assigned_at``/``queued_at``), i.e. the part before the commit and the relay.

There are enough agents (200 slots each, a quarter more slots than tickets, their first domains in
the proportions of the questions' domains) for every ticket to be assigned; ``--agents`` lowers
that to measure ``ticket.queued`` too. The first ``--warmup`` seconds are published at the same rate
but not measured. ``--replicas`` runs several routing processes sharing the partitions.

    uv run python bench/routing_bench.py [--rate 500] [--duration 60] [--warmup 5] [--agents N]
                                         [--replicas N] [--broker-jvm tests|make-run] [--burst-ms 10]

Writes bench/results/routing.json and routing.md. Exits non-zero only when something failed
(a decision never arrived, a service did not start); missed targets are reported as MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import itertools
import json
import math
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
import psutil
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from helpdesk_runtime.kafka import DEFAULT_JVM_OPTIONS, FAST_START_JVM_OPTIONS
from helpdesk_runtime.procs import free_port
from helpdesk_runtime.pytest_plugin import start_infra
from helpdesk_runtime.stack import Stack
from helpdesk_shared.chassis.auth import mint_token
from helpdesk_shared.chassis.migrations import upgrade_database
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET
from helpdesk_shared.contracts import EventEnvelope, Priority, TicketAssigned, TicketCreated, TicketQueued
from helpdesk_shared.contracts.topics import ALL_TOPICS, EVENT_TOPIC_PARTITIONS, SERVICE_TOPIC, source_for

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "insuranceqa-zh"
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS_MS = {"p50": 30.0, "p99": 150.0}
SLOTS_PER_AGENT = 200  # the API's maximum max_concurrent
STALL_SECONDS = 30.0  # no decision at all for this long while some are missing: routing is stuck
ASSIGNED, QUEUED = TicketAssigned.cloudevent_type(), TicketQueued.cloudevent_type()
CREATED = TicketCreated.cloudevent_type()
INTAKE_TOPIC = SERVICE_TOPIC["intake"]
_DECISION_TYPES = (ASSIGNED.encode(), QUEUED.encode())
PRIORITIES = [Priority.NORMAL] * 6 + [Priority.LOW, Priority.HIGH, Priority.HIGH, Priority.URGENT]
FALLBACK_QUESTIONS = [
    ("車險續保要準備什麼資料？", "auto-insurance"),
    ("住院醫療費用怎麼申請理賠？", "health-insurance"),
    ("壽險保費可以按月繳嗎？", "life-insurance"),
]


# ---- data and setup ---------------------------------------------------------------------------


def load_split(split: str) -> list[tuple[str, str]] | None:
    path = DATA / f"{split}.json.gz"
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [(q["zh"], q["domain"]) for q in json.load(f).values()]


@dataclass
class Setup:
    agents: int
    slots: int
    domains: list[str]
    classifier: dict[str, Any] | None
    questions: list[str]


def seed(routing_url: str, *, agents: int) -> Setup:
    """A team with a lead, ``agents`` specialists of 200 slots over the domains, and the classifier."""
    token = mint_token(secret=DEV_JWT_SECRET, subject="bench-admin", roles=["admin"], ttl_seconds=3600)
    train, valid = load_split("train"), load_split("valid")
    domains = sorted({d for _, d in train}) if train else sorted({d for _, d in FALLBACK_QUESTIONS})
    with httpx.Client(base_url=routing_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        lead = uuid.uuid4()
        team = c.post("/v1/teams", json={"name": "bench", "lead_id": str(lead)})
        team.raise_for_status()
        team_id = team.json()["id"]
        # Each specialist's first domain follows the questions' mix (the load replays `valid`),
        # so no domain fills up long before the others; the next two domains are fallbacks.
        mix = collections.Counter(d for _, d in valid) if valid else collections.Counter(domains)
        members = [(lead, ["lead"], domains)] + [
            (uuid.uuid4(), ["specialist"], [domains[(domains.index(d) + k) % len(domains)] for k in range(3)])
            for d in _apportion(mix, agents)
        ]
        for agent_id, roles, skills in members:
            c.post(
                "/v1/agents",
                json={
                    "id": str(agent_id),
                    "name": f"bench-{str(agent_id)[:8]}",
                    "team_id": team_id,
                    "roles": roles,
                    "domains": skills,
                    "languages": ["zh"],
                    "max_concurrent": SLOTS_PER_AGENT,
                },
            ).raise_for_status()
        classifier = None
        if train:
            lines = b"\n".join(orjson.dumps({"text": t, "domain": d}) for t, d in train)
            c.post(
                "/v1/routing/training-examples",
                content=lines,
                headers={"Content-Type": "application/x-ndjson"},
            ).raise_for_status()
            trained = c.post("/v1/routing/classifier/retrain")
            trained.raise_for_status()
            classifier = trained.json()
    questions = [t for t, _ in valid] if valid else [t for t, _ in FALLBACK_QUESTIONS]
    return Setup(agents, agents * SLOTS_PER_AGENT, domains, classifier, questions)


def _apportion(mix: collections.Counter[str], seats: int) -> list[str]:
    """`seats` domains in proportion to `mix` (largest remainders), most common first."""
    total = sum(mix.values())
    quotas = {d: seats * n / total for d, n in mix.items()}
    counts = {d: math.floor(q) for d, q in quotas.items()}
    for d in sorted(quotas, key=lambda d: counts[d] - quotas[d])[: seats - sum(counts.values())]:
        counts[d] += 1
    return [d for d, _ in mix.most_common() for _ in range(counts[d])]


# ---- the load ---------------------------------------------------------------------------------


class Decided(NamedTuple):
    """A decision as the load generator read it back, with the times along its way (epoch seconds)."""

    type: str
    read_at: float
    made_at: float
    """The decision's own stamp (`assigned_at` / `queued_at`), taken inside routing's transaction."""
    relayed_at: float
    """The Kafka record's timestamp: set by routing's outbox relay as it sent the event."""


@dataclass
class Run:
    sent_at: dict[uuid.UUID, float] = field(default_factory=dict)
    """Ticket → wall time its ticket.created was handed to the producer."""
    measured: set[uuid.UUID] = field(default_factory=set)
    decided: dict[uuid.UUID, Decided] = field(default_factory=dict)
    """Ticket → its first decision as read back."""
    duplicates: int = 0
    produce_seconds: float = 0.0
    produced: int = 0
    max_send_lag_ms: float = 0.0
    drain_seconds: float = 0.0
    stalled: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    """Where the CPUs went while the load ran (see `CpuMeter`)."""
    stages: dict[str, Any] = field(default_factory=dict)
    """Routing's own histograms of its stages during the run (see `stage_breakdown`)."""


class CpuMeter:
    """CPU time of the routing process, of this load generator and of the whole machine from now
    until `stop`: tells a routing process that is CPU-bound (≈ 1 core: one event loop) from one
    that waits, and how much of the machine the load itself took."""

    def __init__(self, pids: list[int]) -> None:
        self._processes = [psutil.Process(pid) for pid in pids]
        self._began = time.monotonic()
        self._routing = self._routing_seconds()
        self._load = time.process_time()
        self._machine = psutil.cpu_times()

    def _routing_seconds(self) -> float:
        return sum(float(t.user + t.system) for t in (p.cpu_times() for p in self._processes))

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._began
        try:
            routing = self._routing_seconds() - self._routing
        except psutil.Error:  # routing died: the report says so elsewhere
            routing = math.nan
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - sum(self._machine) + self._machine.idle
        # Time the hypervisor gave this machine's CPUs to someone else (counted in `busy` too): on a
        # shared host, what makes two runs of the same code differ.
        stolen = getattr(machine, "steal", 0.0) - getattr(self._machine, "steal", 0.0)
        return {
            "seconds": round(elapsed, 2),
            "routing_cores": round(routing / elapsed, 2),
            "routing_cpu_seconds": round(routing, 2),
            "load_generator_cores": round((time.process_time() - self._load) / elapsed, 2),
            "machine_busy_cores": round(busy / elapsed, 2),
            "machine_stolen_cores": round(stolen / elapsed, 2),
        }


# Routing's own histograms of where an event's time goes (helpdesk_shared.chassis), read from every
# replica's /metrics before and after the load: what the stages took during the run.
STAGES = {
    "event_age": (
        "helpdesk_event_age_seconds",
        "the oldest fetched record's age as its partition worker takes it up",
    ),
    "group_wait": ("helpdesk_event_group_wait_seconds", "a run's wait for a group transaction"),
    "group_transaction": ("helpdesk_event_group_seconds", "the group transaction (handling and commit)"),
    "relay_delay": ("helpdesk_outbox_relay_delay_seconds", "a commit to the relay pass that publishes it"),
    "run_size": ("helpdesk_event_batch_size", "events per group transaction"),
}


@dataclass
class Histogram:
    buckets: collections.defaultdict[float, float] = field(
        default_factory=lambda: collections.defaultdict(float)
    )
    """Cumulative counts by upper bound (``le``, +Inf included)."""
    total: float = 0.0


def read_stages(urls: list[str]) -> dict[str, Histogram]:
    """The stage histograms of the routing replicas at ``urls``, added up."""
    return parse_stages([httpx.get(f"{url}/metrics", timeout=10).text for url in urls])


def parse_stages(expositions: list[str]) -> dict[str, Histogram]:
    """The stage histograms of Prometheus text expositions (ticket.created's on the intake topic
    only, where the metric has a type or a topic), added up."""
    stages = {name: Histogram() for name in STAGES}
    stage_of = {metric: name for name, (metric, _) in STAGES.items()}
    for text in expositions:
        for family in text_string_to_metric_families(text):
            if (stage := stage_of.get(family.name)) is None:
                continue
            for sample in family.samples:
                labels = sample.labels
                if labels.get("type", CREATED) != CREATED or not labels.get("topic", INTAKE_TOPIC).endswith(
                    INTAKE_TOPIC
                ):
                    continue
                if sample.name.endswith("_bucket"):
                    stages[stage].buckets[float(labels["le"])] += sample.value
                elif sample.name.endswith("_sum"):
                    stages[stage].total += sample.value
    return stages


def stage_breakdown(before: dict[str, Histogram], after: dict[str, Histogram]) -> dict[str, Any]:
    """Mean and median (interpolated within its bucket) of each stage during the run: the
    difference of the readings before and after it."""
    out: dict[str, Any] = {}
    for name, (metric, meaning) in STAGES.items():
        was, now = before[name], after[name]
        buckets = sorted((le, n - was.buckets[le]) for le, n in now.buckets.items())
        count = buckets[-1][1] if buckets else 0.0
        median = None
        lower_le, lower_n = 0.0, 0.0
        for le, n in buckets:
            if count and n >= count / 2:
                share = (count / 2 - lower_n) / (n - lower_n)
                median = lower_le + share * (le - lower_le) if math.isfinite(le) else lower_le
                break
            lower_le, lower_n = le, n
        scale = 1 if name == "run_size" else 1000  # seconds → ms
        out[name] = {
            "metric": metric,
            "meaning": meaning,
            "unit": "events" if name == "run_size" else "ms",
            "observations": int(count),
            "mean": round((now.total - was.total) / count * scale, 2) if count else None,
            "median": round(median * scale, 2) if median is not None else None,
        }
    return out


def _processes(count: int) -> str:
    return "one routing process" if count == 1 else f"{count} routing processes (replicas)"


def created_event(n: int, question: str) -> tuple[uuid.UUID, bytes, list[tuple[str, bytes]]]:
    ticket_id = uuid.uuid4()
    payload = TicketCreated(
        ticket_id=ticket_id,
        number=f"HD-{n:06d}",
        channel="web",
        kind="question",
        subject=question[:60],
        description=question,
        priority=PRIORITIES[n % len(PRIORITIES)],
        customer_id=uuid.uuid4(),
        created_at=datetime.now(UTC),
    )
    envelope = EventEnvelope.wrap(payload, source=source_for("intake"), subject=str(ticket_id))
    headers = [
        ("ce_type", envelope.type.encode()),
        ("ce_id", str(envelope.id).encode()),
        ("correlationid", b""),
    ]
    return ticket_id, orjson.dumps(envelope.model_dump(mode="json")), headers


async def consume(consumer: AIOKafkaConsumer, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=100)
        received = time.time()
        for records in batch.values():
            for record in records:
                # The relay's ce_type header says what the event is: the load generator parses
                # only decisions, leaving its share of the CPUs to the system under test.
                if not any(name == "ce_type" and value in _DECISION_TYPES for name, value in record.headers):
                    continue
                event = orjson.loads(record.value)
                data = event["data"]
                ticket_id = uuid.UUID(data["ticket_id"])
                if ticket_id in run.decided:
                    run.duplicates += 1  # a relay copy, or a dequeue after a queueing: first one counts
                    continue
                made = data["assigned_at"] if event["type"] == ASSIGNED else data["queued_at"]
                # The record's timestamp is set by routing's relay as it sends: it splits the time
                # after the decision into the commit and relay, and the delivery to this reader.
                run.decided[ticket_id] = Decided(
                    event["type"], received, datetime.fromisoformat(made).timestamp(), record.timestamp / 1000
                )


def handover_offset(n: int, *, rate: float, burst_ms: float) -> float:
    """Seconds from the start at which ticket ``n`` is handed to the producer: its own time at
    ``rate``, or with ``burst_ms`` the start of the burst its own time falls in."""
    due = n / rate
    if burst_ms > 0:
        tick = burst_ms / 1000
        due = math.floor(due / tick + 1e-9) * tick
    return due


async def load(bootstrap: str, prefix: str, setup: Setup, args: argparse.Namespace) -> Run:
    run = Run()
    consumer = AIOKafkaConsumer(
        prefix + SERVICE_TOPIC["routing"],
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    # The options of intake's relay (helpdesk_shared.chassis.outbox.new_producer).
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=512 * 1024,
        request_timeout_ms=10_000,
    )
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    reader = asyncio.create_task(consume(consumer, run, stop))
    topic = prefix + SERVICE_TOPIC["intake"]
    questions = itertools.cycle(setup.questions)
    warmup = round(args.rate * args.warmup)
    total = warmup + round(args.rate * args.duration)
    events = [created_event(n, next(questions)) for n in range(total)]
    loop = asyncio.get_running_loop()
    try:
        began = loop.time() + 0.05
        for n in range(total):
            delay = began + handover_offset(n, rate=args.rate, burst_ms=args.burst_ms) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                run.max_send_lag_ms = max(run.max_send_lag_ms, -delay * 1000)
            ticket_id, value, headers = events[n]
            run.sent_at[ticket_id] = time.time()
            if n >= warmup:
                run.measured.add(ticket_id)
            await producer.send(topic, value=value, key=str(ticket_id).encode(), headers=headers)
        await producer.flush()
        run.produced = total
        run.produce_seconds = loop.time() - began
        drained = loop.time()
        last_count, last_progress = -1, loop.time()
        while len(run.decided.keys() & run.sent_at.keys()) < total:
            count = len(run.decided)
            if count != last_count:
                last_count, last_progress = count, loop.time()
            elif loop.time() - last_progress > STALL_SECONDS:
                run.stalled = True
                break
            if loop.time() - drained > args.drain_timeout:
                break  # still deciding, but the backlog would take too long: the rest is censored
            await asyncio.sleep(0.1)
        run.drain_seconds = loop.time() - drained
    finally:
        stop.set()
        await reader
        await producer.stop()
        await consumer.stop()
    return run


# ---- the report -------------------------------------------------------------------------------


def percentiles(values: list[float], *, undecided: int = 0) -> dict[str, Any]:
    """Percentiles in ms; ``undecided`` tickets count as slower than everything (``None`` when a
    percentile falls among them: the latency is only known to exceed the cut-off)."""
    ordered = sorted(values) + [math.inf] * undecided
    if not ordered:
        return {"count": 0, "undecided": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}

    def pick(p: float) -> float | None:
        value = ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]
        return None if math.isinf(value) else round(value, 2)

    return {
        "count": len(values),
        "undecided": undecided,
        "p50_ms": pick(50),
        "p90_ms": pick(90),
        "p99_ms": pick(99),
        "max_ms": pick(100),
        "mean_ms": round(statistics.fmean(values), 2) if values and not undecided else None,
    }


def report(run: Run, setup: Setup, args: argparse.Namespace, infra_note: dict[str, str]) -> dict[str, Any]:
    measured = [t for t in run.sent_at if t in run.measured]
    seen = [t for t in measured if t in run.decided]
    undecided = len(measured) - len(seen)

    def latencies(kind: str | None, *, made: bool = False) -> list[float]:
        out = []
        for t in seen:
            d = run.decided[t]
            if kind is None or d.type == kind:
                out.append(((d.made_at if made else d.read_at) - run.sent_at[t]) * 1000)
        return out

    def leg(start: Callable[[Decided], float], end: Callable[[Decided], float]) -> dict[str, Any]:
        """Percentiles of one leg of the assigned tickets' way."""
        decided = [run.decided[t] for t in seen if run.decided[t].type == ASSIGNED]
        return percentiles([(end(d) - start(d)) * 1000 for d in decided])

    # With a slot for every ticket, an undecided ticket would have been assigned: it counts there.
    assigned = percentiles(latencies(ASSIGNED), undecided=undecided)
    checks = {}
    for name, target in TARGETS_MS.items():
        value = assigned[f"{name}_ms"]
        checks[name] = {"target_ms": target, "value_ms": value, "pass": value is not None and value <= target}
    window_start = min(run.sent_at[t] for t in measured) if measured else 0.0
    decided_all = [run.decided[t].read_at for t in run.sent_at if t in run.decided]
    first_send = min(run.sent_at.values(), default=0.0)
    throughput = len(decided_all) / (max(decided_all) - first_send) if decided_all else 0.0
    buckets = []
    for start in range(0, math.ceil(args.duration), 10):
        bucket = [t for t in measured if start <= run.sent_at[t] - window_start < start + 10]
        in_bucket = [(run.decided[t].read_at - run.sent_at[t]) * 1000 for t in bucket if t in run.decided]
        buckets.append({"from_s": start, **percentiles(in_bucket, undecided=len(bucket) - len(in_bucket))})
    return {
        "benchmark": "ticket.created → ticket.assigned latency",
        "routing_processes": args.replicas,
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.machine(),
        },
        "infrastructure": infra_note,
        "routing_settings": dict(item.split("=", 1) for item in args.routing_env),
        "load": {
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "burst_ms": args.burst_ms,
            "published": run.produced,
            "measured": len(measured),
            "achieved_rate_per_s": round(run.produced / run.produce_seconds, 1) if run.produce_seconds else 0,
            "max_send_lag_ms": round(run.max_send_lag_ms, 1),
            "decisions_per_s": round(throughput, 1),
            "routing_cpu_ms_per_decision": round(1000 * run.cpu["routing_cpu_seconds"] / len(decided_all), 2)
            if run.cpu and decided_all
            else None,
            "routing_cores": run.cpu.get("routing_cores"),
            "load_generator_cores": run.cpu.get("load_generator_cores"),
            "machine_busy_cores": run.cpu.get("machine_busy_cores"),
            "machine_stolen_cores": run.cpu.get("machine_stolen_cores"),
            "waited_after_last_publish_s": round(run.drain_seconds, 2),
            "drain_timeout_s": args.drain_timeout,
        },
        "setup": {
            "specialists": setup.agents,
            "slots": setup.slots,
            "domains": len(setup.domains),
            "classifier": setup.classifier,
        },
        "latency": {
            "assigned": assigned,
            "queued": percentiles(latencies(QUEUED)),
            "any_decision": percentiles(latencies(None), undecided=undecided),
            "decision_made_assigned": percentiles(latencies(ASSIGNED, made=True), undecided=undecided),
            "assigned_made_to_relayed": leg(lambda d: d.made_at, lambda d: d.relayed_at),
            "assigned_relayed_to_read": leg(lambda d: d.relayed_at, lambda d: d.read_at),
        },
        "routing_stages": run.stages,
        "per_10s_any_decision": buckets,
        "targets": checks,
        "undecided_at_cut_off": undecided,
        "stalled": run.stalled,
        "duplicate_decisions_ignored": run.duplicates,
    }


def _ms(value: float | None, stats: dict[str, Any], cut_off_s: float) -> str:
    """A latency for people: "41.3 ms", "> 120 s" (among the undecided) or "—" (nothing measured)."""
    if value is not None:
        return f"{value:,.1f} ms"
    return f"> {cut_off_s:g} s" if stats["undecided"] else "—"


def _stage_value(stage: dict[str, Any], key: str) -> str:
    value = stage[key]
    return "—" if value is None else f"{value:,.1f} {stage['unit']}"


def markdown(result: dict[str, Any]) -> str:
    load_, lat, setup = result["load"], result["latency"], result["setup"]
    infra = result["infrastructure"]
    cut = load_["drain_timeout_s"]

    def row(name: str, stats: dict[str, Any]) -> str:
        cells = [_ms(stats[k], stats, cut) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
        mean = "—" if stats.get("mean_ms") is None else f"{stats['mean_ms']:,.1f} ms"
        return f"| {name} | {stats['count']:,} | {stats['undecided']:,} | {' | '.join(cells)} | {mean} |"

    classifier = setup["classifier"]
    model = (
        f"classifier v{classifier['version']} ({classifier['n_examples']:,} examples, "
        f"{len(classifier['classes'])} domains)"
        if classifier
        else "no classifier (../shared/data missing): rules only"
    )
    lines = [
        "# Routing latency benchmark",
        "",
        f"Generated {result['generated_at']} · {result['machine']['cpus']} CPUs · "
        f"Python {result['machine']['python']}",
        "",
        f"`ticket.created` published straight to Kafka at **{load_['rate_per_s']:g}/s for "
        f"{load_['duration_s']:g} s** ("
        + (
            f"the tickets due within each {load_['burst_ms']:g} ms handed over together, as intake's relay "
            "publishes in passes; "
            if load_.get("burst_ms")
            else "each ticket handed over at its own time; "
        )
        + f"after {load_['warmup_s']:g} s of warm-up, not measured) to "
        f"{_processes(result['routing_processes'])}; {setup['specialists']} specialists × 200 slots "
        f"over {setup['domains']} domains, "
        f"{model}. Latency = publish → decision read back from Kafka. Tickets still undecided when the "
        f"benchmark stopped waiting ({cut:g} s after the last publish) count as slower than every other.",
        "",
        f"Infrastructure: {infra['postgres']}; {infra['kafka']}.",
        "",
        "| latency | decided | undecided | p50 | p90 | p99 | max | mean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("**ticket.assigned**", lat["assigned"]),
        row("ticket.queued", lat["queued"]),
        row("any decision", lat["any_decision"]),
        row("routing decided (assigned_at − publish)", lat["decision_made_assigned"]),
        row("then committed and relayed (record timestamp − assigned_at)", lat["assigned_made_to_relayed"]),
        row("then delivered to the reader (read − record timestamp)", lat["assigned_relayed_to_read"]),
        "",
        "| target (ticket.assigned) | value | verdict |",
        "|---|---:|---|",
    ]
    for name, check in result["targets"].items():
        verdict = "PASS" if check["pass"] else "MISS"
        value = _ms(check["value_ms"], lat["assigned"], cut)
        lines.append(f"| {name} ≤ {check['target_ms']:g} ms | {value} | **{verdict}** |")
    lines += [
        "",
        f"Published {load_['published']:,} ({load_['achieved_rate_per_s']}/s achieved, worst send lag "
        f"{load_['max_send_lag_ms']} ms); routing decided {load_['decisions_per_s']}/s; waited "
        f"{load_['waited_after_last_publish_s']} s after the last publish; undecided then: "
        f"{result['undecided_at_cut_off']:,}{' (routing STALLED)' if result['stalled'] else ''}.",
        "",
        f"CPU while the load ran: routing {load_['routing_cores']} cores "
        f"({load_['routing_cpu_ms_per_decision']} ms per decision, everything in the process: consumer, "
        f"classification, SQL, outbox relay), the whole machine {load_['machine_busy_cores']} of "
        f"{result['machine']['cpus']} (PostgreSQL, Kafka and this load generator included, the load "
        f"generator {load_['load_generator_cores']} cores; "
        f"{load_['machine_stolen_cores']} of it stolen by the hypervisor)."
        + (
            f" Routing settings: {', '.join(f'{k}={v}' for k, v in result['routing_settings'].items())}."
            if result["routing_settings"]
            else ""
        ),
        "",
        "Inside routing, from its own metrics over the run (`ticket.created` on the intake topic; medians "
        "interpolated within the histograms' buckets):",
        "",
        "| stage | metric | observations | median | mean |",
        "|---|---|---:|---:|---:|",
        *(
            f"| {stage['meaning']} | `{stage['metric']}` | {stage['observations']:,} | "
            f"{_stage_value(stage, 'median')} | {_stage_value(stage, 'mean')} |"
            for stage in result["routing_stages"].values()
        ),
        "",
        "| published during (s) | decided | undecided | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for b in result["per_10s_any_decision"]:
        span = f"{b['from_s']}–{b['from_s'] + 10}"
        cells = " | ".join(_ms(b[k], b, cut) for k in ("p50_ms", "p99_ms", "max_ms"))
        lines.append(f"| {span} | {b['count']:,} | {b['undecided']:,} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="tickets per second (default 500)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first (default 5)")
    parser.add_argument(
        "--agents",
        type=int,
        default=None,
        help="specialists of 200 slots (default: a slot for every ticket, and a quarter more)",
    )
    parser.add_argument(
        "--broker-jvm",
        choices=["make-run", "tests"],
        default="tests",
        help="the local broker's JVM options: the tests' C1-only ones (default: a freshly started "
        "broker's C2 compiler takes a quarter of a core through a one-minute run — warm-up, not "
        "serving) or `make run`'s full JIT",
    )
    parser.add_argument(
        "--routing-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the routing process (repeatable), e.g. "
        "ROUTING_CONSUMER_CONCURRENCY=1 or ROUTING_CONFIG_CACHE_SECONDS=0 to compare settings",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="routing processes (replicas sharing the partitions, as on a bigger machine); default 1",
    )
    parser.add_argument(
        "--burst-ms",
        type=float,
        default=10.0,
        help="hand the tickets due within each this many ms over together, as intake's relay "
        "publishes in passes (default 10; 0: each at its own time)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for decisions after the last publish (default 120); then: undecided",
    )
    args = parser.parse_args()
    routing_env = dict(item.split("=", 1) for item in args.routing_env if "=" in item)
    if len(routing_env) != len(args.routing_env):
        parser.error("--routing-env takes NAME=VALUE")
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.burst_ms < 0:
        parser.error("--rate and --duration must be positive, --warmup and --burst-ms not negative")
    if not 1 <= args.replicas <= EVENT_TOPIC_PARTITIONS:
        parser.error(f"--replicas must be between 1 and {EVENT_TOPIC_PARTITIONS} (the partitions)")
    tickets = args.rate * (args.warmup + args.duration)
    agents = args.agents if args.agents is not None else math.ceil(tickets * 1.25 / SLOTS_PER_AGENT)

    prefix = f"rbench{secrets.token_hex(3)}."
    with (
        tempfile.TemporaryDirectory(prefix="helpdesk-bench-") as tmp,
        # C1 only by default: a long-running broker has finished compiling; a fresh one spends a
        # quarter of a core on C2 compilation through a one-minute run, which is not serving load.
        start_infra(
            Path(tmp),
            broker_jvm_options=DEFAULT_JVM_OPTIONS
            if args.broker_jvm == "make-run"
            else FAST_START_JVM_OPTIONS,
        ) as infra,
    ):
        url = infra.create_database("bench_routing")
        upgrade_database(url, "routing_service")
        infra.ensure_topics({prefix + name: n for name, n in ALL_TOPICS.items()})
        # One Stack per routing process: each runs a replica on its own port (same database,
        # same consumer group: the partitions are shared out between them).
        stacks = [
            Stack(
                database_urls={"routing": url},
                kafka_bootstrap=infra.kafka_bootstrap,
                log_dir=Path(tmp) / f"logs-{n}",
                ports={"routing": free_port()},
                topic_prefix=prefix,
                environment="test",
                extra_env={"HELPDESK_LOG_LEVEL": "WARNING", **routing_env},
            )
            for n in range(args.replicas)
        ]
        stack = stacks[0]
        infra_note = {
            "postgres": "external PostgreSQL"
            if infra.postgres is None
            else "embedded PostgreSQL with durable=False (fsync and synchronous_commit off)",
            "kafka": "external Kafka"
            if infra.broker is None
            else (
                "local single-node KRaft broker (the JVM options of `make run`: G1 GC, full JIT)"
                if args.broker_jvm == "make-run"
                else "local single-node KRaft broker (the tests' JVM options: C1 JIT, serial GC)"
            ),
        }
        try:
            for replica in stacks:
                replica.start(names=["routing"], timeout=120)
            print(f"seeding {agents} specialists and training the classifier …", flush=True)
            setup = seed(stack.url("routing"), agents=agents)
            print(
                f"publishing {args.rate:g} ticket.created/s for {args.warmup:g} + {args.duration:g} s …",
                flush=True,
            )
            urls = [replica.url("routing") for replica in stacks]
            stages_before = read_stages(urls)
            meter = CpuMeter([replica.processes["routing"].pid for replica in stacks])
            run = uvloop.run(load(infra.kafka_bootstrap, prefix, setup, args))
            run.cpu = meter.stop()
            run.stages = stage_breakdown(stages_before, read_stages(urls))
            routing_alive = all(replica.processes["routing"].is_running() for replica in stacks)
        finally:
            for replica in stacks:
                replica.stop()
    result = report(run, setup, args, infra_note)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "routing.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "routing.md").write_text(markdown(result), encoding="utf-8")

    lat, load_, cut = result["latency"], result["load"], args.drain_timeout
    for name in ("assigned", "queued", "any_decision", "decision_made_assigned"):
        stats = lat[name]
        if stats["count"] or stats["undecided"]:
            cells = " · ".join(
                f"{k[:-3]} {_ms(stats[k], stats, cut)}" for k in ("p50_ms", "p90_ms", "p99_ms")
            )
            print(f"{name:>24}: decided {stats['count']:,}, undecided {stats['undecided']:,} · {cells}")
    print(
        f"published {load_['achieved_rate_per_s']}/s · routing decided {load_['decisions_per_s']}/s"
        f" · undecided at cut-off {result['undecided_at_cut_off']:,}"
    )
    print(
        f"routing CPU {load_['routing_cores']} cores, {load_['routing_cpu_ms_per_decision']} ms per decision"
        f" · machine {load_['machine_busy_cores']} of {result['machine']['cpus']} cores busy"
        f" ({load_['machine_stolen_cores']} stolen, {load_['load_generator_cores']} the load generator)"
    )
    for name, check in result["targets"].items():
        verdict = "PASS" if check["pass"] else "MISS"
        value = _ms(check["value_ms"], lat["assigned"], cut)
        print(f"ticket.assigned {name} ≤ {check['target_ms']:g} ms: {value} → {verdict}")
    print(f"→ {RESULTS / 'routing.md'}")
    if result["stalled"] or not routing_alive:
        print(f"ERROR: routing stopped deciding (stalled: {result['stalled']}, alive: {routing_alive})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
