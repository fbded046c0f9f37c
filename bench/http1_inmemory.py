"""Server CPU per HTTP/1.1 request in memory: the protocol classes with no sockets.

The real `HTTPToolsConnection` / `H11Connection` serve keep-alive requests written into an
in-memory transport on a real event loop (uvloop or asyncio), with a hello or 64 KiB echo
app. No syscalls, no load generator: what is left is the Python (and C parser) work per
request, which is what a change to the parsing path changes. Prints CPU µs per request:
the minimum and the median of --repeat runs (on a busy machine the minimum is the steadier
figure; compare versions in alternating runs).

    python bench/http1_inmemory.py --backends httptools,h11 --loops uvloop,asyncio
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from palfrey.config import load_config
from palfrey.plan.plan import plan
from palfrey.protocols.context import ConnectionContext, ServerState
from palfrey.protocols.http11_response import DefaultHeaders

# What wrk sends (its default request, and the echo script's POST).
HELLO = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
ECHO_BODY = b"x" * 65536
ECHO = (
    b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: 65536\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n" + ECHO_BODY
)
# The settings a server with the default configuration serves with.
CONNECTIONS = plan(load_config(["apps:app"], environ={}), environ={}).connections


async def hello(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


async def echo(scope: Any, receive: Any, send: Any) -> None:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"application/octet-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"".join(chunks)})


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.responses = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

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


def protocol_class(backend: str) -> Any:
    if backend == "httptools":
        from palfrey.protocols.http11_httptools import HTTPToolsConnection

        return HTTPToolsConnection
    from palfrey.protocols.http11_h11 import H11Connection

    return H11Connection


async def serve(backend: str, scenario: str, requests: int) -> float:
    """CPU seconds for `requests` keep-alive requests on one connection."""
    app, data = (hello, [HELLO]) if scenario == "hello" else (echo, [ECHO[:65536], ECHO[65536:]])
    ctx = ConnectionContext(
        app=app,
        state=ServerState(),
        limits=CONNECTIONS.limits,
        defaults=DefaultHeaders(CONNECTIONS.headers),
    )
    transport = Transport()
    protocol = protocol_class(backend)(ctx)
    protocol.connection_made(transport)
    sleep = asyncio.sleep
    start = time.process_time()
    for count in range(1, requests + 1):
        for piece in data:
            protocol.data_received(piece)
        while transport.responses < count:
            await sleep(0)
    elapsed = time.process_time() - start
    protocol.connection_lost(None)
    return elapsed


def measure(
    backend: str, loop_name: str, scenario: str, requests: int, repeat: int
) -> tuple[float, float]:
    results = []
    for _ in range(repeat):
        if loop_name == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        try:
            gc.collect()
            results.append(loop.run_until_complete(serve(backend, scenario, requests)))
        finally:
            loop.close()
    return min(results) / requests * 1e6, statistics.median(results) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="httptools,h11")
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument("--scenarios", default="hello,echo")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for scenario in args.scenarios.split(","):
        count = args.requests if scenario == "hello" else max(args.requests // 10, 100)
        for backend in args.backends.split(","):
            for loop_name in args.loops.split(","):
                low, median = measure(backend, loop_name, scenario, count, args.repeat)
                print(
                    f"{scenario:6} {backend:10} {loop_name:8} "
                    f"min {low:7.2f}  median {median:7.2f} us/req"
                )


if __name__ == "__main__":
    main()
