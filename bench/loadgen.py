"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

Both sides of a comparison are driven by this same generator, with the same
connection count and duration, so their ratio is fair. It is much lighter than
an HTTP client library, which keeps the generator from being the bottleneck on
a two-core machine. Loopback only.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    notes: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else float("nan"),
        }


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def run_load(
    host: str,
    port: int,
    build_request: Callable[[int], bytes],
    *,
    connections: int,
    seconds: float,
    ok_status: int,
    warmup_seconds: float = 2.0,
    on_measuring: Callable[[], None] = lambda: None,
) -> LoadResult:
    """`build_request(i)` returns the raw bytes of request number i; loop until `seconds` are up.

    `on_measuring` is called when the warm-up is over and the measured seconds begin."""
    assert host in ("127.0.0.1", "localhost"), "load tests target loopback only"
    counter = 0
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.monotonic() + warmup_seconds + seconds

    async def worker() -> None:
        nonlocal counter, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < stop_at:
                counter += 1
                request = build_request(counter)
                started = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                elapsed = (time.perf_counter() - started) * 1000
                if measuring:
                    if status == ok_status:
                        latencies.append(elapsed)
                    else:
                        errors += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(warmup_seconds)
    on_measuring()
    measuring = True
    began = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    return LoadResult(requests=len(latencies), errors=errors, seconds=elapsed, latencies_ms=latencies)


def http_post(path: str, host: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body
