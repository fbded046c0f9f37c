"""Server CPU per hello request with the access log and metrics on, in memory.

The HTTP/1.1 protocol class (httptools) serves keep-alive hello requests on 16
connections at once, written into in-memory transports on a real event loop, with the
ConnectionContext a Server builds for each configuration: the access log goes through
the logging configuration Palfrey applies (the direct path, to a real file: its writes
are real system calls, one per loop turn), metrics count into a real shared-memory
block. No sockets and no load generator, so what is left is the per-request work these
features add. bench/observability.py measures the same configurations over loopback
with wrk; this one is steadier on a busy machine, and with --callgrind it counts
instructions, which do not depend on the machine's load at all.

    python bench/observability_inmemory.py                 # CPU us per request
    python bench/observability_inmemory.py --callgrind     # instructions per request
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"logging": {"access_log": False}},
    "text": {"logging": {"access_log": True}},
    "gunicorn": {
        "logging": {
            "access_log": True,
            "access_format": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
        }
    },
    "json": {"logging": {"access_log": True, "format": "json"}},
    "metrics": {"logging": {"access_log": False}, "metrics": {"enabled": True}},
    "text+metrics": {"logging": {"access_log": True}, "metrics": {"enabled": True}},
    "json+metrics": {
        "logging": {"access_log": True, "format": "json"},
        "metrics": {"enabled": True},
    },
}

HELLO = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"
CONNECTIONS = 16


async def hello(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


class Transport(asyncio.Transport):
    def __init__(self, peer: int) -> None:
        super().__init__()
        self.responses = 0
        self.peer = ("127.0.0.1", 50000 + peer)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": self.peer}.get(name, default)

    def write(self, data: Any) -> None:
        self.responses += 1

    def writelines(self, list_of_data: Any) -> None:
        self.responses += 1

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


def _plan(name: str, log_file: str) -> Any:
    from palfrey.config import load_config
    from palfrey.plan.plan import plan

    sections = {key: dict(value) for key, value in CONFIGS[name].items()}
    if sections["logging"].get("access_log"):
        sections["logging"]["access_destination"] = log_file
    sections["server"] = {"loop": "uvloop"}
    sections["http"] = {"backend": "httptools"}
    return plan(load_config(["apps:app"], environ={}, **sections), environ={})


async def serve(name: str, requests: int, log_file: str) -> float:
    """CPU seconds for `requests` hello requests spread over CONNECTIONS connections."""
    from palfrey.plan.realize import apply_logging
    from palfrey.protocols.http11_httptools import HTTPToolsConnection
    from palfrey.server import Server

    plan = _plan(name, log_file)
    apply_logging(plan)
    server = Server(plan)
    ctx = server._context(hello, {})
    transports = [Transport(index) for index in range(CONNECTIONS)]
    protocols = [HTTPToolsConnection(ctx) for _ in transports]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)
    sleep = asyncio.sleep
    turns = requests // CONNECTIONS
    start = time.process_time()
    for turn in range(1, turns + 1):
        for protocol in protocols:
            protocol.data_received(HELLO)
        while transports[-1].responses < turn:
            await sleep(0)
    await sleep(0)  # the last turn's access lines are written
    elapsed = time.process_time() - start
    for protocol in protocols:
        protocol.connection_lost(None)
    observers = getattr(server, "observers", None)  # None too before observability existed
    if observers is not None:
        observers.flush()
    block = getattr(server, "metrics_block", None)
    if block is not None:
        block.close()
    return elapsed / (turns * CONNECTIONS)


def measure(name: str, requests: int, repeat: int, log_file: str) -> list[float]:
    import uvloop

    results = []
    for _ in range(repeat):
        loop = uvloop.new_event_loop()
        try:
            gc.collect()
            results.append(loop.run_until_complete(serve(name, requests, log_file)))
        finally:
            loop.close()
    return results


def _callgrind(name: str, requests: int) -> int:
    """Instructions executed by one run of `name` serving `requests` requests."""
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--configs",
        name,
        "--requests",
        str(requests),
        "--repeat",
        "1",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--requests", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per request (valgrind): runs of N and 2N requests, differenced",
    )
    args = parser.parse_args()
    names = args.configs.split(",")
    if args.callgrind:
        small = args.requests // 4
        per_request = {}
        for name in names:
            one, two = _callgrind(name, small), _callgrind(name, 2 * small)
            per_request[name] = (two - one) / small
            print(f"{name:>13}: {per_request[name]:>9,.0f} instructions/request", file=sys.stderr)
        base = per_request.get("off")
        print("config         instr/req   ratio to off")
        for name, value in per_request.items():
            ratio = f"{value / base:.3f}" if base else "-"
            print(f"{name:<13}  {value:>9,.0f}   {ratio}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        log_file = os.path.join(tmp, "access.log")
        table = {name: measure(name, args.requests, args.repeat, log_file) for name in names}
    base = min(table["off"]) if "off" in table else None
    print("config         min us/req  median us/req  added us (min)")
    for name, results in table.items():
        best = min(results) * 1e6
        added = f"{best - base * 1e6:+.2f}" if base is not None else "-"
        print(f"{name:<13}  {best:>10.2f}  {statistics.median(results) * 1e6:>13.2f}  {added:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
