"""WebSocket echo benchmark: Palfrey against uvicorn, both WebSocket backends.

    .venv/bin/python bench/websocket.py                       # every scenario, 5 s each
    .venv/bin/python bench/websocket.py --duration 3 --connections 10 --sizes 32

Each server runs `bench/websocket.py:app` (an echo app) pinned to CPU 0 with taskset; the
load generator is this file's `--client` mode pinned to CPU 1: a raw-socket asyncio
client (uvloop when installed) sending pre-built masked frames and counting echoed frames,
one message in flight per connection. The websockets library's client is not used: its
per-message cost is higher than the servers' and would measure the client.

Scenarios: {10, 100} connections x {32 B, 64 KiB} text messages x compression
{off, on}. With compression the client offers `permessage-deflate;
client_no_context_takeover` so one pre-compressed frame can be replayed; the server
still compresses its replies with context takeover.

Reported per row: round trips (messages echoed) per second and the ratio of Palfrey to
uvicorn on the same WebSocket backend; server CPU microseconds per message (utime + stime
of the server process from /proc/<pid>/stat, sampled by the client at the start and end
of the measured window, lowest of the repeats) for each server and their Palfrey/uvicorn
ratio (lower is better; unlike msgs/s it holds on a shared machine); client CPU seconds
(client CPU near the run time means the client was the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from procstat import cpu_seconds, free_port

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
HOST = "127.0.0.1"


# -- the app every server runs ----------------------------------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


# -- the client ------------------------------------------------------------------------


def masked_frame(payload: bytes, *, compressed: bool) -> bytes:
    first = 0x81 | (0x40 if compressed else 0)  # FIN, text, RSV1 when compressed
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    # RFC 6455 §5.3: payload XOR the repeated 4-byte key, done as one big integer.
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
    return head + mask + masked


def message_payload(size: int) -> bytes:
    base = b"Palfrey WebSocket benchmark: the quick brown fox jumps over the lazy dog. "
    return (base * (size // len(base) + 1))[:size]


def deflate(payload: bytes) -> bytes:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # RFC 7692 §7.2.1: drop the trailing empty block


class EchoClient(asyncio.Protocol):
    def __init__(self, frame: bytes, counter: list[int], ready: asyncio.Future[None]) -> None:
        self.frame = frame
        self.counter = counter
        self.ready = ready
        self.buffer = bytearray()
        self.handshaken = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(buffer[:200]).decode()))
                return
            del buffer[: end + 4]
            self.handshaken = True
            if not self.ready.done():
                self.ready.set_result(None)
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length = struct.unpack_from("!H", buffer, 2)[0]
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length = struct.unpack_from("!Q", buffer, 2)[0]
                offset = 10
            if len(buffer) < offset + length:
                return
            opcode = buffer[0] & 0x0F
            del buffer[: offset + length]
            if opcode in (1, 2):
                self.counter[0] += 1
                assert self.transport is not None
                self.transport.write(self.frame)


def client_tls(cafile: str | None) -> ssl.SSLContext | None:
    """A client context trusting `cafile` (the harness's trustme CA), or None for plain."""
    return None if cafile is None else ssl.create_default_context(cafile=cafile)


async def client_main(
    port: int,
    connections: int,
    size: int,
    compress: bool,
    seconds: float,
    server_pid: int = 0,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    payload = message_payload(size)
    frame = masked_frame(deflate(payload) if compress else payload, compressed=compress)
    counter = [0]
    transports = []
    extension = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
    for _ in range(connections):
        ready: asyncio.Future[None] = loop.create_future()
        transport, _protocol = await loop.create_connection(
            lambda ready=ready: EchoClient(frame, counter, ready), HOST, port, ssl=tls
        )
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extension if compress else ''}\r\n"
        )
        transport.write(request.encode())
        await asyncio.wait_for(ready, 10)
        transports.append(transport)
    for transport in transports:
        transport.write(frame)
    await asyncio.sleep(0.5)  # warm-up
    # The server's CPU time is sampled at the same instants as the message counter, so
    # connection set-up, warm-up and shutdown are not charged to the measured messages.
    server_start = cpu_seconds(server_pid) if server_pid else 0.0
    start_count, start = counter[0], time.perf_counter()
    cpu_start = time.process_time()
    await asyncio.sleep(seconds)
    count, elapsed = counter[0] - start_count, time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    server_cpu = cpu_seconds(server_pid) - server_start if server_pid else 0.0
    for transport in transports:
        transport.abort()
    return {
        "messages": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "client_cpu": cpu,
        "server_cpu": server_cpu,
        # Server CPU per echoed message: robust to other load on a shared machine.
        "server_us_per_msg": server_cpu / count * 1e6 if count else 0.0,
    }


def run_client(args: argparse.Namespace) -> None:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(
        client_main(
            args.port,
            args.connections,
            args.size,
            args.compress,
            args.duration,
            args.server_pid,
            client_tls(args.cafile),
        )
    )
    print(json.dumps(result))


# -- the harness -----------------------------------------------------------------------

SERVERS = {
    "palfrey": lambda ws, port: [sys.executable, "-m", "palfrey", "websocket:app", "--ws", ws],
    "uvicorn": lambda ws, port: [sys.executable, "-m", "uvicorn", "websocket:app", "--ws", ws],
}
COMMON = [
    "--host",
    HOST,
    "--http",
    "httptools",
    "--loop",
    "uvloop",
    "--no-access-log",
    "--log-level",
    "warning",
    "--lifespan",
    "off",
]


def start_server(server: str, ws: str, cpu: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH_DIR), str(REPO_ROOT)]))
    argv = ["taskset", "-c", str(cpu), *SERVERS[server](ws, port), *COMMON, "--port", str(port)]
    proc = subprocess.Popen(
        argv,
        cwd=BENCH_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{server} --ws {ws} did not start")


def measure(
    server: str, ws: str, scenario: tuple[int, int, bool], args: argparse.Namespace
) -> dict[str, Any]:
    connections, size, compress = scenario
    proc, port = start_server(server, ws, args.server_cpu)
    try:
        argv = [
            "taskset",
            "-c",
            str(args.client_cpu),
            sys.executable,
            __file__,
            "--client",
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--size",
            str(size),
            "--duration",
            str(args.duration),
            "--server-pid",
            str(proc.pid),
        ]
        if compress:
            argv.append("--compress")
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_harness(args: argparse.Namespace) -> None:
    scenarios = [
        (c, s, z) for z in args.compression for c in args.connections_list for s in args.sizes
    ]
    rows = []
    print(
        f"{'scenario':32} {'backend':18} {'palfrey/s':>10} {'uvicorn/s':>10} {'ratio':>6} "
        f"{'p us/msg':>9} {'u us/msg':>9} {'us p/u':>7} {'cli cpu p/u':>12}",
        flush=True,
    )
    for connections, size, compress in scenarios:
        for ws in args.backends:
            results = {}
            all_runs: dict[str, list[dict[str, Any]]] = {}
            for server in ("palfrey", "uvicorn"):
                runs = all_runs[server] = [
                    measure(server, ws, (connections, size, compress), args)
                    for _ in range(args.repeat)
                ]
                results[server] = max(runs, key=lambda r: r["rate"])
            ratio = results["palfrey"]["rate"] / results["uvicorn"]["rate"]
            # Per-message server CPU: the best (lowest) of the repeats for each server.
            cost = {
                server: min(r["server_us_per_msg"] for r in runs)
                for server, runs in all_runs.items()
            }
            cost_ratio = cost["palfrey"] / cost["uvicorn"] if cost["uvicorn"] else 0.0
            name = f"{connections} conn, {size} B, deflate {'on' if compress else 'off'}"
            row = {
                "connections": connections,
                "size": size,
                "compression": compress,
                "backend": ws,
                "ratio": round(ratio, 3),
                "us_per_msg": {server: round(v, 3) for server, v in cost.items()},
                "us_per_msg_ratio": round(cost_ratio, 3),
                **{server: {k: round(v, 3) for k, v in r.items()} for server, r in results.items()},
            }
            rows.append(row)
            print(
                f"{name:32} {ws:18} {results['palfrey']['rate']:10.0f} "
                f"{results['uvicorn']['rate']:10.0f} {ratio:6.2f} "
                f"{cost['palfrey']:9.2f} {cost['uvicorn']:9.2f} {cost_ratio:7.2f} "
                f"{results['palfrey']['client_cpu']:5.2f}/{results['uvicorn']['client_cpu']:<5.2f}",
                flush=True,
            )
    if args.output:
        Path(args.output).write_text(
            json.dumps({"duration": args.duration, "rows": rows}, indent=2) + "\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket echo benchmark")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--compress", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    # --client over TLS (bench/tls.py): trust this CA and wrap every connection.
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections-list", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 65536])
    parser.add_argument(
        "--compression", type=lambda v: v == "on", nargs="+", default=[False, True], help="on/off"
    )
    parser.add_argument("--backends", nargs="+", default=["websockets-sansio", "wsproto"])
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per cell")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--output", help="write the rows as JSON here")
    args = parser.parse_args()
    if args.client:
        run_client(args)
    else:
        run_harness(args)


if __name__ == "__main__":
    main()
