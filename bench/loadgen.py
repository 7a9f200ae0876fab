"""A small HTTP load generator, used when wrk is not installed.

Reads the same deliveries file as ``bench/deliveries.lua`` and prints the same one-line
JSON summary. It is one Python process on asyncio, so it tops out far below wrk: on a
fast server it measures itself. The table says which generator ran.

    python -m bench.loadgen http://127.0.0.1:8000/ --deliveries FILE --connections 16 --duration 10

``--rate R`` sends R requests a second in all, on a fixed schedule (what wrk2 does, which
is not packaged here): a request's latency counts from when it was due, so a stalled server
shows as the wait it caused, not as fewer requests. ``--timeline FILE`` writes each answered
request's start (Unix time), latency and status, one a line. SIGTERM ends the run early,
after the requests under way, with the summary as usual.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def read_requests(path: Path, host: str) -> list[bytes]:
    """Return each delivery of the file as a raw HTTP/1.1 request."""
    requests = []
    for line in path.read_text(encoding="utf-8").splitlines():
        target, msg_id, stamp, signature, body = line.split("\t", 4)
        payload = body.encode()
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"webhook-id: {msg_id}\r\nwebhook-timestamp: {stamp}\r\n"
            f"webhook-signature: {signature}\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        requests.append(head.encode() + payload)
    return requests


def read_get_requests(path: Path, host: str, headers: list[str]) -> list[bytes]:
    """Return a GET request for each path of the file (the API benchmark's)."""
    extra = "".join(f"{header}\r\n" for header in headers)
    return [
        f"GET {line} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]


class Stats:
    def __init__(self, deadline: float) -> None:
        #: When to stop sending (monotonic); SIGTERM brings it forward.
        self.deadline = deadline
        self.latencies: list[float] = []
        #: (start as Unix time, latency s, status or 0 for no answer), answered requests.
        self.timeline: list[tuple[float, float, int]] = []
        self.status_errors = 0
        self.connect_errors = 0
        self.read_errors = 0
        self.timeouts = 0
        self.sent = 0
        self.wrapped = 0
        self.bytes = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, int]:
    """Return (status, server keeps the connection, bytes read)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    keep = lines[0].startswith("HTTP/1.1")
    for header in lines[1:]:
        name, _, value = header.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection":
            keep = value.strip().lower() != "close"
    if length:
        await reader.readexactly(length)
    return status, keep, len(head) + length


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    start: int,
    step: int,
    stats: Stats,
    interval: float = 0.0,
) -> None:
    """Send this connection's slice of the requests, back to back or one every ``interval``."""
    index = start
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    # With a rate, connection k of n is due first at k/n of an interval, then every interval.
    due = time.monotonic() + interval * start / step
    while time.monotonic() < stats.deadline:
        if interval:
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, max(stats.deadline - time.monotonic(), 0)))
                if time.monotonic() >= stats.deadline:
                    break
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                stats.connect_errors += 1
                await asyncio.sleep(0.01)
                continue
        if index >= len(requests):
            index = start
            stats.wrapped += 1
        payload = requests[index]
        index += step
        started = min(time.monotonic(), due) if interval else time.monotonic()
        wall = time.time() - (time.monotonic() - started)
        due += interval
        stats.sent += 1
        try:
            writer.write(payload)
            assert reader is not None
            status, keep, size = await asyncio.wait_for(_read_response(reader), timeout=5)
        except TimeoutError:
            stats.timeouts += 1
            keep = False
            status = 0
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats.read_errors += 1
            keep = False
            status = 0
        else:
            if time.monotonic() <= stats.deadline:
                stats.latencies.append(time.monotonic() - started)
                stats.bytes += size
                if not 200 <= status < 400:
                    stats.status_errors += 1
        if time.monotonic() <= stats.deadline:
            stats.timeline.append((wall, time.monotonic() - started, status))
        if not keep:
            writer.close()
            writer = reader = None
    if writer is not None:
        writer.close()


async def run(
    url: str, requests: list[bytes], connections: int, duration: float, rate: float = 0.0
) -> Stats:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stats = Stats(time.monotonic() + duration)

    def stop() -> None:
        stats.deadline = min(stats.deadline, time.monotonic())

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    interval = connections / rate if rate else 0.0
    await asyncio.gather(
        *(
            _connection(host, port, requests, n, connections, stats, interval)
            for n in range(connections)
        )
    )
    return stats


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("url")
    parser.add_argument("--deliveries", type=Path, default=None)
    parser.add_argument("--get-paths", type=Path, default=None, help="GET these paths instead")
    parser.add_argument("--header", action="append", default=[], help="with --get-paths")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s in all; 0: flat out")
    parser.add_argument("--timeline", type=Path, default=None, help="write each request here")
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    if args.get_paths is not None:
        requests = read_get_requests(args.get_paths, parts.netloc, args.header)
    elif args.deliveries is not None:
        requests = read_requests(args.deliveries, parts.netloc)
    else:
        parser.error("give --deliveries or --get-paths")
    started = time.monotonic()
    stats = asyncio.run(run(args.url, requests, args.connections, args.duration, args.rate))
    elapsed = time.monotonic() - started
    if args.timeline is not None:
        args.timeline.write_text(
            "".join(f"{at:.6f}\t{took:.6f}\t{status}\n" for at, took, status in stats.timeline),
            encoding="utf-8",
        )
    latencies = sorted(stats.latencies)
    summary = {
        "bench": 1,
        "duration_us": int(elapsed * 1e6),
        "requests": len(latencies),
        "bytes": stats.bytes,
        "sent": stats.sent,
        "wrapped": stats.wrapped,
        "errors": {
            "connect": stats.connect_errors,
            "read": stats.read_errors,
            "write": 0,
            "status": stats.status_errors,
            "timeout": stats.timeouts,
        },
        "latency_us": {
            "p50": int(_percentile(latencies, 0.50) * 1e6),
            "p90": int(_percentile(latencies, 0.90) * 1e6),
            "p99": int(_percentile(latencies, 0.99) * 1e6),
            "max": int((latencies[-1] if latencies else 0) * 1e6),
            "mean": (sum(latencies) / len(latencies) * 1e6) if latencies else 0.0,
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
