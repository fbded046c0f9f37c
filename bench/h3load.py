"""A small HTTP/3 load generator on qh3 (a QUIC stack with its packet protection and
QPACK in Rust, API-compatible with aioquic), for bench/http3.py: the Debian h2load has no
HTTP/3, and a client on aioquic costs about as much CPU per request as the server.

    python bench/h3load.py --port 8443 --connections 8 --streams 10 --duration 10

Each connection keeps `--streams` GET requests in flight for `--duration` seconds. Prints
one JSON line: requests, failures, elapsed seconds, latency percentiles (ms) and this
process's CPU seconds. Keep `--streams` well below the server's concurrent-stream limit
(Palfrey's `http3.max_concurrent_streams`, 100): at the limit qh3 raises "stream limit
exceeded" instead of waiting for the server's MAX_STREAMS credit as aioquic does, and
the connection's requests stop (reported as "connection failed" on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from typing import Any

from qh3.asyncio.client import connect
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.h3.connection import H3_ALPN, H3Connection
from qh3.h3.events import DataReceived, HeadersReceived
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.events import ConnectionTerminated, StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting: dict[int, tuple[asyncio.Future[int], float]] = {}
        self.status: dict[int, int] = {}
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event: Any) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            for future, _ in self.waiting.values():
                if not future.done():
                    future.set_result(0)
            self.waiting.clear()
            return
        if isinstance(event, StreamReset):
            self._finish(event.stream_id, 0)
        for h3_event in self.h3.handle_event(event):
            sid = h3_event.stream_id
            if isinstance(h3_event, HeadersReceived):
                self.status[sid] = int(dict(h3_event.headers).get(b":status", b"0"))
            if isinstance(h3_event, (HeadersReceived, DataReceived)) and h3_event.stream_ended:
                self._finish(sid, self.status.pop(sid, 0))

    def _finish(self, sid: int, status: int) -> None:
        entry = self.waiting.pop(sid, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(status)

    async def get(self, authority: bytes, path: bytes) -> tuple[int, float]:
        sid = self._quic.get_next_available_stream_id()
        future = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.waiting[sid] = (future, started)
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path),
        ]
        self.h3.send_headers(sid, fields, end_stream=True)
        self.transmit()
        status = await future
        return status, (time.perf_counter() - started) * 1000


async def worker(
    client: Client, authority: bytes, deadline: float, latencies: list[float], counts: list[int]
) -> None:
    while time.monotonic() < deadline:
        try:
            status, ms = await asyncio.wait_for(client.get(authority, b"/"), 10)
        except asyncio.TimeoutError:
            counts[1] += 1
            continue
        if status == 200:
            counts[0] += 1
            latencies.append(ms)
        else:
            counts[1] += 1
            if client._quic._close_event is not None:
                return


async def connection(
    args: argparse.Namespace, deadline: float, latencies: list[float], counts: list[int]
) -> None:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.verify_mode = ssl.CERT_NONE
    configuration.max_data = configuration.max_stream_data = 16 << 20
    authority = f"localhost:{args.port}".encode()
    async with connect(
        args.host, args.port, configuration=configuration, create_protocol=Client
    ) as client:
        await asyncio.gather(
            *(worker(client, authority, deadline, latencies, counts) for _ in range(args.streams))
        )
        if client.terminated is not None:
            closed = client.terminated
            print(
                f"connection closed: {closed.error_code:#x} {closed.reason_phrase}", file=sys.stderr
            )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    counts = [0, 0]
    started = time.monotonic()
    deadline = started + args.duration
    cpu = os.times()
    outcomes = await asyncio.gather(
        *(connection(args, deadline, latencies, counts) for _ in range(args.connections)),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            print(f"connection failed: {outcome!r}", file=sys.stderr)
    elapsed = time.monotonic() - started
    used = os.times()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0

    return {
        "requests": counts[0],
        "failed": counts[1],
        "elapsed": elapsed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "cpu_s": (used.user - cpu.user) + (used.system - cpu.system),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    options = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(options))))
