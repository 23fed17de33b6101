"""Intake throughput and latency against a minimal FastAPI + asyncpg yardstick.

Both run as one uvicorn worker on the same embedded PostgreSQL, driven by the same
load generator with the same connection count and duration. Intake does its full
work per request: bearer-token auth, validation, Idempotency-Key, customer upsert,
ticket + timeline rows and the outbox event (relayed to the real Kafka broker).

    uv run python bench/intake_bench.py [--seconds 15] [--connections 32] [--rounds 3]

The measured seconds of each side are split into rounds that alternate between the two
(yardstick then intake, intake then yardstick, …): on a shared machine whose speed drifts over
minutes, back-to-back halves would compare two different machines.

Writes bench/results/intake.json and intake.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from helpdesk_runtime.procs import free_port, start_process, wait_for_port
from helpdesk_runtime.pytest_plugin import start_infra
from helpdesk_runtime.stack import Stack
from helpdesk_shared.chassis.auth import mint_token
from helpdesk_shared.chassis.migrations import upgrade_database
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET
from helpdesk_shared.contracts.topics import ALL_TOPICS

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import LoadResult, http_post, run_load

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def postgres_pids(data_dir: Path) -> list[int]:
    """The benchmark's PostgreSQL: its postmaster (first line of postmaster.pid) and children."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == postmaster:
                pids.append(int(proc.name))
    return pids


def mean_batch_size(base_url: str) -> float:
    """Tickets per group-commit transaction over the run, from intake's own /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "helpdesk_intake_ticket_batch_size"
        for s in family.samples
    }
    count = samples.get("helpdesk_intake_ticket_batch_size_count", 0.0)
    return round(samples.get("helpdesk_intake_ticket_batch_size_sum", 0.0) / count, 1) if count else 0.0


def measured_load(
    port: int, build: Callable[[int], bytes], app_pid: int, pg_data: Path, args: argparse.Namespace
) -> LoadResult:
    """Run one round of load and attach CPU milliseconds per request of the app and of PostgreSQL."""
    app_before, pg_before = cpu_seconds([app_pid]), cpu_seconds(postgres_pids(pg_data))
    result = asyncio.run(
        run_load(
            "127.0.0.1",
            port,
            build,
            connections=args.connections,
            seconds=args.seconds / args.rounds,
            ok_status=201,
        )
    )
    done = max(result.requests, 1)
    result.cpu_ms_per_request = {
        "app": (cpu_seconds([app_pid]) - app_before) * 1000 / done,
        "postgres": (cpu_seconds(postgres_pids(pg_data)) - pg_before) * 1000 / done,
    }
    return result


def combined(rounds: list[LoadResult]) -> LoadResult:
    """The rounds of one side as one result (CPU per request weighted by each round's requests)."""
    requests = sum(r.requests for r in rounds)
    result = LoadResult(
        requests=requests,
        errors=sum(r.errors for r in rounds),
        seconds=sum(r.seconds for r in rounds),
        latencies_ms=[latency for r in rounds for latency in r.latencies_ms],
    )
    result.cpu_ms_per_request = {
        part: round(sum(r.cpu_ms_per_request[part] * r.requests for r in rounds) / max(requests, 1), 3)
        for part in ("app", "postgres")
    }
    return result


RESULTS = Path(__file__).parent / "results"
PREFIX = "bench."


def intake_request(token: str) -> Callable[[int], bytes]:
    def build(i: int) -> bytes:
        body = orjson.dumps(
            {
                "channel": "web",
                "kind": "question",
                "subject": f"保單理賠進度查詢 #{i}",
                "description": "上個月提交的理賠申請還沒有結果，請問目前進度如何？需要補什麼文件嗎？",
                "customer": {"external_id": f"bench-{i % 5000}", "email": "bench@example.com"},
            }
        )
        return http_post(
            "/v1/tickets",
            "127.0.0.1",
            body,
            {"Authorization": f"Bearer {token}", "Idempotency-Key": f"bench-{uuid.uuid4()}"},
        )

    return build


def yardstick_request(i: int) -> bytes:
    body = orjson.dumps(
        {
            "subject": f"保單理賠進度查詢 #{i}",
            "description": "上個月提交的理賠申請還沒有結果，請問目前進度如何？需要補什麼文件嗎？",
        }
    )
    return http_post("/tickets", "127.0.0.1", body, {})


def report(
    intake: LoadResult, yardstick: LoadResult, round_ratios: list[float], args: argparse.Namespace
) -> dict[str, object]:
    ratio = intake.rps / yardstick.rps if yardstick.rps else 0.0
    return {
        "benchmark": "POST /v1/tickets vs minimal FastAPI + asyncpg single INSERT",
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "round_ratios": [round(r, 3) for r in round_ratios],
        "workers": 1,
        "intake": {**intake.summary(), "cpu_ms_per_request": intake.cpu_ms_per_request, **intake.notes},
        "yardstick": {**yardstick.summary(), "cpu_ms_per_request": yardstick.cpu_ms_per_request},
        "throughput_ratio": round(ratio, 3),
        "target_ratio": 1.0,
        "meets_target": ratio >= 1.0,
    }


def write(result: dict[str, object]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intake.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [("intake", result["intake"]), ("yardstick", result["yardstick"])]
    lines = [
        "# Intake benchmark",
        "",
        f"{result['benchmark']}; {result['connections']} connections, "
        f"{result['seconds']} s each in {result['rounds']} alternating rounds, 1 uvicorn worker each.",
        "",
        "| | req/s | p50 ms | p99 ms | errors | app CPU ms/req | PostgreSQL CPU ms/req |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} "  # type: ignore[index]
        f"| {r['cpu_ms_per_request']['app']} | {r['cpu_ms_per_request']['postgres']} |"  # type: ignore[index]
        for name, r in rows
    ]
    lines += [
        "",
        f"Throughput ratio intake / yardstick: **{result['throughput_ratio']}** "
        f"(target ≥ {result['target_ratio']}); round by round: "
        + ", ".join(str(r) for r in result["round_ratios"]),  # type: ignore[attr-defined]
        "",
    ]
    (RESULTS / "intake.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side (default 3)")

    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    with tempfile.TemporaryDirectory(prefix="helpdesk-bench-") as tmp, start_infra(Path(tmp)) as infra:
        intake_url = infra.create_database("bench_intake")
        yardstick_url = infra.create_database("bench_yardstick")
        upgrade_database(intake_url, "intake_service")
        infra.ensure_topics({PREFIX + name: n for name, n in ALL_TOPICS.items()})
        stack = Stack(
            database_urls={"intake": intake_url},
            kafka_bootstrap=infra.kafka_bootstrap,
            log_dir=Path(tmp) / "logs",
            ports={"intake": free_port()},
            topic_prefix=PREFIX,
            environment="test",
            extra_env={"HELPDESK_LOG_LEVEL": "WARNING"},
        )
        yard_port = free_port()
        yardstick = start_process(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "yardstick_app:app",
                "--app-dir",
                str(Path(__file__).parent),
                "--host",
                "127.0.0.1",
                "--port",
                str(yard_port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            log_path=Path(tmp) / "logs" / "yardstick.log",
            name="yardstick",
            env={**os.environ, "YARDSTICK_DATABASE_URL": yardstick_url},
        )
        try:
            wait_for_port(yard_port, proc=yardstick, timeout=30)
            stack.start_service("intake")
            stack.wait_ready(names=["intake"], timeout=60)
            token = mint_token(secret=DEV_JWT_SECRET, subject="bench-channel", roles=["channel"])
            assert infra.postgres is not None, "the benchmark runs its own PostgreSQL"
            pg_data = infra.postgres.data_dir
            sides = {
                "yardstick": (yard_port, yardstick_request, yardstick.pid),
                "intake": (stack.ports["intake"], intake_request(token), stack.processes["intake"].pid),
            }
            rounds: dict[str, list[LoadResult]] = {"yardstick": [], "intake": []}
            for number in range(args.rounds):
                order = ["yardstick", "intake"] if number % 2 == 0 else ["intake", "yardstick"]
                for side in order:
                    port, build, pid = sides[side]
                    rounds[side].append(measured_load(port, build, pid, pg_data, args))
            yard_result, intake_result = combined(rounds["yardstick"]), combined(rounds["intake"])
            intake_result.notes["mean_tickets_per_transaction"] = mean_batch_size(stack.url("intake"))
            round_ratios = [
                i.rps / y.rps if y.rps else 0.0
                for i, y in zip(rounds["intake"], rounds["yardstick"], strict=True)
            ]
        finally:
            stack.stop()
            yardstick.stop()
    result = report(intake_result, yard_result, round_ratios, args)
    write(result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
