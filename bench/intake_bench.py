"""Intake throughput and latency against a minimal FastAPI + asyncpg yardstick.

Both run as one uvicorn worker on the same embedded PostgreSQL, driven by the same
load generator with the same connection counts and durations. Intake does its full
work per request: bearer-token auth, validation, Idempotency-Key, customer upsert,
ticket + timeline rows and the outbox event (relayed to the real Kafka broker).

    uv run python bench/intake_bench.py [--seconds 15] [--connections 16,32,64,128,256,512] [--rounds 3]

Throughput is a server's capacity, so each side is measured at every connection count of the
sweep (TechEmpower's levels, 16 to 512) and its throughput is its best level's, as there: a
closed-loop load generator with too few connections measures how long a request waits, not how
many the server can take. The yardstick (one INSERT per request) saturates its core at a few
dozen; intake (requests stored together, one transaction per batch) needs more requests in
flight to fill its batches. The report keeps every level with both sides side by side, so the
ratio at each one is visible too.

The measured seconds of each side and level are split into rounds that alternate between the
two (yardstick then intake, intake then yardstick, …): on a shared machine whose speed drifts
over minutes, back-to-back halves would compare two different machines.

The load generator runs on uvloop, as the services do (~0.04 ms of CPU per request at 512
connections, a tenth less than on asyncio's own loop); the report gives its CPU per request beside
the server's and PostgreSQL's, as all three share the two cores.

Writes bench/results/intake.json and intake.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import psutil
import uvloop
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


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time the process has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def postgres_cpu_seconds(postmaster: psutil.Process) -> float:
    """CPU time of the benchmark's PostgreSQL so far: its postmaster, its live children, and its
    children that have exited (in the postmaster's children times once reaped) — backends and
    autovacuum workers come and go during a round."""
    times = postmaster.cpu_times()
    total = float(times.user + times.system + times.children_user + times.children_system)
    for child in postmaster.children():
        try:
            total += cpu_seconds(child)
        except psutil.NoSuchProcess:
            continue
    return total


def batch_totals(base_url: str) -> tuple[float, float]:
    """Tickets stored and group-commit transactions so far, from intake's own /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "helpdesk_intake_ticket_batch_size"
        for s in family.samples
    }
    return (
        samples.get("helpdesk_intake_ticket_batch_size_sum", 0.0),
        samples.get("helpdesk_intake_ticket_batch_size_count", 0.0),
    )


def measured_load(
    port: int,
    build: Callable[[int], bytes],
    app: psutil.Process,
    postmaster: psutil.Process,
    *,
    connections: int,
    seconds: float,
) -> LoadResult:
    """Run one round of load and attach CPU milliseconds per request of the app, of PostgreSQL and
    of this load generator over the measured seconds (not the warm-up)."""
    at_start: dict[str, float] = {}

    def measuring() -> None:
        at_start.update(
            app=cpu_seconds(app),
            postgres=postgres_cpu_seconds(postmaster),
            load_generator=time.process_time(),
        )

    result = uvloop.run(
        run_load(
            "127.0.0.1",
            port,
            build,
            connections=connections,
            seconds=seconds,
            ok_status=201,
            on_measuring=measuring,
        )
    )
    done = max(result.requests, 1)
    result.cpu_ms_per_request = {
        "app": (cpu_seconds(app) - at_start["app"]) * 1000 / done,
        "postgres": (postgres_cpu_seconds(postmaster) - at_start["postgres"]) * 1000 / done,
        "load_generator": (time.process_time() - at_start["load_generator"]) * 1000 / done,
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
        for part in ("app", "postgres", "load_generator")
    }
    return result


def connection_levels(text: str) -> list[int]:
    """`32,64,128` → [32, 64, 128]: distinct positive counts in ascending order."""
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("connection counts must be positive integers")
    return levels


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


def ratio(intake_rps: float, yardstick_rps: float) -> float:
    return round(intake_rps / yardstick_rps, 3) if yardstick_rps else 0.0


def side_summary(result: LoadResult) -> dict[str, object]:
    return {**result.summary(), "cpu_ms_per_request": result.cpu_ms_per_request, **result.notes}


def report(
    rounds: dict[int, dict[str, list[LoadResult]]], batch_sizes: dict[int, float], args: argparse.Namespace
) -> dict[str, object]:
    """Every level's combined rounds, and the two sides' best levels compared."""
    levels = []
    for connections, sides in rounds.items():
        intake, yardstick = combined(sides["intake"]), combined(sides["yardstick"])
        intake.notes["mean_tickets_per_transaction"] = batch_sizes[connections]
        levels.append(
            {
                "connections": connections,
                "intake": side_summary(intake),
                "yardstick": side_summary(yardstick),
                "throughput_ratio": ratio(intake.rps, yardstick.rps),
                "round_ratios": [
                    ratio(i.rps, y.rps) for i, y in zip(sides["intake"], sides["yardstick"], strict=True)
                ],
            }
        )
    best = {
        side: max(levels, key=lambda level: level[side]["rps"])  # type: ignore[index]
        for side in ("intake", "yardstick")
    }
    peak = {side: {"connections": level["connections"], **level[side]} for side, level in best.items()}  # type: ignore[dict-item]
    throughput = ratio(peak["intake"]["rps"], peak["yardstick"]["rps"])  # type: ignore[arg-type]
    return {
        "benchmark": "POST /v1/tickets vs minimal FastAPI + asyncpg single INSERT",
        "connection_levels": list(rounds),
        "seconds_per_level": args.seconds,
        "rounds": args.rounds,
        "workers": 1,
        "levels": levels,
        "intake": peak["intake"],
        "yardstick": peak["yardstick"],
        "throughput_ratio": throughput,
        "target_ratio": 1.0,
        "meets_target": throughput >= 1.0,
    }


def write(result: dict[str, object]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intake.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Intake benchmark",
        "",
        f"{result['benchmark']}; connections {result['connection_levels']}, "
        f"{result['seconds_per_level']} s per side and level in {result['rounds']} alternating rounds, "
        "1 uvicorn worker each.",
        "",
        "| connections | side | req/s | p50 ms | p99 ms | errors | app CPU ms/req | PostgreSQL CPU ms/req "
        "| load generator CPU ms/req | ratio (rounds) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:  # type: ignore[attr-defined]
        for side in ("intake", "yardstick"):
            r = level[side]
            cpu = r["cpu_ms_per_request"]
            rounds = ", ".join(str(x) for x in level["round_ratios"])
            shown = f"{level['throughput_ratio']} ({rounds})" if side == "intake" else ""
            lines.append(
                f"| {level['connections']} | {side} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} "
                f"| {r['errors']} | {cpu['app']} | {cpu['postgres']} | {cpu['load_generator']} | {shown} |"
            )
    intake, yardstick = result["intake"], result["yardstick"]
    lines += [
        "",
        f"Throughput (each side at its best level): intake {intake['rps']} req/s at "  # type: ignore[index]
        f"{intake['connections']} connections, yardstick {yardstick['rps']} req/s at "  # type: ignore[index]
        f"{yardstick['connections']}; ratio **{result['throughput_ratio']}** "  # type: ignore[index]
        f"(target ≥ {result['target_ratio']}).",
        "",
    ]
    (RESULTS / "intake.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0, help="per side and connection level")
    parser.add_argument(
        "--connections",
        type=connection_levels,
        default=connection_levels("16,32,64,128,256,512"),
        help="the sweep's connection counts, comma-separated (default 16,32,64,128,256,512)",
    )
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
            # The postmaster's pid is the first line of its postmaster.pid.
            postmaster_pid = (infra.postgres.data_dir / "postmaster.pid").read_text().split()[0]
            postmaster = psutil.Process(int(postmaster_pid))
            sides = {
                "yardstick": (yard_port, yardstick_request, psutil.Process(yardstick.pid)),
                "intake": (
                    stack.ports["intake"],
                    intake_request(token),
                    psutil.Process(stack.processes["intake"].pid),
                ),
            }
            rounds: dict[int, dict[str, list[LoadResult]]] = {
                level: {"yardstick": [], "intake": []} for level in args.connections
            }
            batches = {level: [0.0, 0.0] for level in args.connections}  # tickets, transactions
            seconds = args.seconds / args.rounds
            for number in range(args.rounds):
                order = ["yardstick", "intake"] if number % 2 == 0 else ["intake", "yardstick"]
                for level in args.connections:
                    for side in order:
                        port, build, process = sides[side]
                        before = batch_totals(stack.url("intake")) if side == "intake" else None
                        measured = measured_load(
                            port, build, process, postmaster, connections=level, seconds=seconds
                        )
                        rounds[level][side].append(measured)
                        if before is not None:
                            after = batch_totals(stack.url("intake"))
                            batches[level][0] += after[0] - before[0]
                            batches[level][1] += after[1] - before[1]
            batch_sizes = {
                level: round(tickets / transactions, 1) if transactions else 0.0
                for level, (tickets, transactions) in batches.items()
            }
        finally:
            stack.stop()
            yardstick.stop()
    result = report(rounds, batch_sizes, args)
    write(result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
