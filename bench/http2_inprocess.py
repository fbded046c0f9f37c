"""Per-request CPU of Palfrey's HTTP/2 adapter and of its HTTP/1.1 (httptools) connection,
in process: no sockets, no load generator, the same app (`bench/apps.py`, GET / hello).

    .venv/bin/python bench/http2_inprocess.py            # 3000 batches of 10, 3 rounds

HTTP/2: one connection fed ten HEADERS frames per `data_received`, as h2load `-m10`
sends them (HPACK-indexed after the first request, with a connection WINDOW_UPDATE per
batch). HTTP/1.1: ten connections fed one GET each per round, as wrk drives them. The
event loop (uvloop) runs the apps between batches; the figure is process CPU time per
request, the writes going to a transport that only counts bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

import hpack
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from apps import app  # noqa: E402

from palfrey.protocols import http2_frames as frames  # noqa: E402
from palfrey.protocols.http2_asyncio import HTTP2Protocol  # noqa: E402
from palfrey.protocols.http11_httptools import HTTPToolsConnection  # noqa: E402
from tests.helpers.plans import connection_context, h2_settings  # noqa: E402

PER_BATCH = 10
FIELDS = [
    (b":method", b"GET"),
    (b":path", b"/"),
    (b":scheme", b"http"),
    (b":authority", b"127.0.0.1:8000"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, parts: Any) -> None:
        self.written += sum(len(p) for p in parts)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass  # the keep-alive timer of an idle connection ends it

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def _turns() -> None:
    for _ in range(2):
        await asyncio.sleep(0)


async def http2(batches: int) -> float:
    conn = HTTP2Protocol(connection_context(app), h2_settings())
    conn.connection_made(CountingTransport())
    conn.data_received(frames.PREFACE + frames.settings({}))
    encoder = hpack.Encoder()
    sid = 1

    def batch() -> bytes:
        nonlocal sid
        parts = []
        for _ in range(PER_BATCH):
            flags = frames.END_STREAM | frames.END_HEADERS
            parts.append(frames.frame(frames.HEADERS, flags, sid, encoder.encode(FIELDS)))
            sid += 2
        parts.append(frames.window_update(0, 1000))
        return b"".join(parts)

    for _ in range(50):
        conn.data_received(batch())
        await _turns()
    data = [batch() for _ in range(batches)]
    gc.collect()
    start = time.process_time()
    for chunk in data:
        conn.data_received(chunk)
        await _turns()
    elapsed = time.process_time() - start
    assert not conn.streams, "requests left unanswered"
    return elapsed * 1e6 / (batches * PER_BATCH)


async def http11(batches: int) -> float:
    ctx = connection_context(app)
    conns = []
    for _ in range(PER_BATCH):
        conn = HTTPToolsConnection(ctx)
        conn.connection_made(CountingTransport())
        conns.append(conn)
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"
    for _ in range(50):
        for conn in conns:
            conn.data_received(request)
        await _turns()
    gc.collect()
    start = time.process_time()
    for _ in range(batches):
        for conn in conns:
            conn.data_received(request)
        await _turns()
    elapsed = time.process_time() - start
    return elapsed * 1e6 / (batches * PER_BATCH)


async def main(batches: int, rounds: int) -> None:
    for number in range(rounds):
        h2 = await http2(batches)
        h1 = await http11(batches)
        print(f"round {number + 1}: HTTP/2 {h2:.1f} µs/req, HTTP/1.1 {h1:.1f} µs/req")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main(args.batches, args.rounds))
