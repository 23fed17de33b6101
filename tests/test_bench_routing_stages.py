"""The routing benchmark's pacing and its breakdown of routing's stage histograms (bench/routing_bench.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "routing_bench.py"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("routing_bench_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Exposition:
    """A replica's /metrics: the chassis histograms the benchmark reads, by their names and labels."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.group_wait = Histogram(
            "helpdesk_event_group_wait_seconds",
            "",
            ["service", "type"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.age = Histogram(
            "helpdesk_event_age_seconds", "", ["service", "topic"], buckets=BUCKETS, registry=self.registry
        )

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_a_stage_is_what_was_observed_between_the_two_readings(bench: ModuleType) -> None:
    replica = Exposition()
    created = replica.group_wait.labels("routing", bench.CREATED)
    for seconds in (0.5, 0.5, 0.5):  # before the load: not part of the run
        created.observe(seconds)
    before = bench.parse_stages([replica.text()])
    for seconds in (0.002, 0.004, 0.006, 0.02, 0.03):
        created.observe(seconds)
    replica.group_wait.labels("routing", "helpdesk.ticket.resolved").observe(0.09)  # another type
    after = bench.parse_stages([replica.text()])

    wait = bench.stage_breakdown(before, after)["group_wait"]
    assert wait["observations"] == 5
    assert wait["mean"] == pytest.approx(12.4)  # (2 + 4 + 6 + 20 + 30) / 5 ms
    # The third of five lies in the (5, 10] ms bucket, which holds one of them: its middle.
    assert 5 < wait["median"] < 10
    assert wait["unit"] == "ms"
    relay = bench.stage_breakdown(before, after)["relay_delay"]
    assert relay["observations"] == 0 and relay["mean"] is None and relay["median"] is None


def test_replicas_add_up_and_only_the_intake_topic_counts(bench: ModuleType) -> None:
    first, second = Exposition(), Exposition()
    before = bench.parse_stages([first.text(), second.text()])
    first.age.labels("routing", "rbench1." + bench.INTAKE_TOPIC).observe(0.02)
    second.age.labels("routing", "rbench1." + bench.INTAKE_TOPIC).observe(0.04)
    second.age.labels("routing", "rbench1.helpdesk.review").observe(0.001)  # another topic
    after = bench.parse_stages([first.text(), second.text()])

    age = bench.stage_breakdown(before, after)["event_age"]
    assert age["observations"] == 2
    assert age["mean"] == pytest.approx(30.0)


def test_tickets_are_handed_over_at_their_own_times_or_together_at_the_start_of_their_burst(
    bench: ModuleType,
) -> None:
    at_own_times = [bench.handover_offset(n, rate=500, burst_ms=0) for n in range(12)]
    assert at_own_times == pytest.approx([n * 0.002 for n in range(12)])
    in_bursts = [bench.handover_offset(n, rate=500, burst_ms=10) for n in range(12)]
    # Five tickets are due within each 10 ms at 500/s: the rate holds, in bursts of five.
    assert in_bursts == pytest.approx([0.0] * 5 + [0.01] * 5 + [0.02] * 2)
