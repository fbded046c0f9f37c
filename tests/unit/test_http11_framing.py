"""Request framing of both HTTP/1.1 backends, in memory (tests/fuzz/driver.py drives the
real protocol classes; nothing of h11 or httptools is mocked).

Each issue-10 reproducer gets its correct verdict on h11 and httptools, on asyncio and
uvloop, sent whole, split into two reads at every offset, and (where a body matters)
into three. Timers never fire here: every answer must come from the bytes alone, so a
refusal that would wait for the head-read timeout fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from tests.fuzz.corpus import REPRODUCERS
from tests.fuzz.driver import LIMITS, Driver, Outcome

Served = tuple[str, bytes, bytes]  # method, raw_path, body


@dataclass(frozen=True)
class Expect:
    statuses: tuple[int, ...]
    served: tuple[Served, ...]
    headers: tuple[tuple[bytes, bytes], ...] | None = None  # of the first request


_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
_EXPECTED = [
    Expect((200,), (("POST", b"/", _SMUGGLED),)),
    Expect((200, 200), (("GET", b"/ws", b""), ("GET", b"/next", b""))),
    Expect(
        (200,),
        (("POST", b"/", b"hello"),),
        headers=((b"host", b"a"), (b"transfer-encoding", b"chunked")),
    ),
    Expect((200, 200), (("POST", b"/", b"x" * 20000), ("GET", b"/next", b""))),
    Expect((200, 400), (("GET", b"/", b""),)),
    Expect((200, 400), (("GET", b"/a", b""),)),
    Expect((200, 200), (("POST", b"/a", b"ab  cd  ef"), ("POST", b"/b", b"x  y"))),
    Expect((200,), (("POST", b"/", b""),)),
    Expect((400,), ()),
    Expect((400,), ()),
    Expect((400,), ()),
    Expect((400,), ()),
]
# Item 4 needs a body over 16 KiB in one read (the corpus keeps it small for speed).
_STREAMS = [
    data.replace(b"3000", b"20000").replace(b"x" * 3000, b"x" * 20000) for data in REPRODUCERS
]
_CASES = list(zip(_STREAMS, _EXPECTED, strict=True))


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    running = Driver(request.param)
    yield running
    running.close()


def _verdict(outcome: Outcome) -> tuple[tuple[int, ...], tuple[Served, ...]]:
    served = tuple((s.method, s.raw_path, s.body or b"") for s in outcome.complete)
    return outcome.statuses, served


def _splits(data: bytes) -> Iterator[list[bytes]]:
    """Whole, then at every offset (for a long stream: every 97th, and every offset
    within 200 bytes of a CR or LF)."""
    yield [data]
    cuts: range | list[int] = range(1, len(data))
    if len(data) > 4000:
        near = {i + d for i, byte in enumerate(data) if byte in (10, 13) for d in range(-200, 200)}
        cuts = sorted({*range(1, len(data), 97), *(i for i in near if 0 < i < len(data))})
    for cut in cuts:
        yield [data[:cut], data[cut:]]


@pytest.mark.parametrize(("data", "expect"), _CASES, ids=[f"item-{i}" for i in range(len(_CASES))])
@pytest.mark.parametrize("backend", ["h11", "httptools"])
def test_reproducer_whole_and_split_at_every_offset(
    data: bytes, expect: Expect, backend: str, driver: Driver
) -> None:
    limits = replace(LIMITS, max_body_size=None)
    runs = [(backend, pieces) for pieces in _splits(data)]
    for pieces, outcome in zip(
        _splits(data), driver.run_many(runs, limits=limits, timers=False), strict=True
    ):
        where = f"reads of {[len(piece) for piece in pieces]}: {outcome.summary()}"
        assert _verdict(outcome) == (expect.statuses, expect.served), where
        assert not outcome.errors, where
        if expect.headers is not None:
            assert outcome.requests[0].headers == expect.headers, where
        if expect.statuses[-1] >= 400:
            assert outcome.closed, where  # every refusal closes, at once


@pytest.mark.parametrize("backend", ["h11", "httptools"])
def test_a_body_in_two_reads_then_the_next_request(backend: str, driver: Driver) -> None:
    data, expect = _CASES[6]
    head_end = data.index(b"\r\n\r\n") + 4
    second = data.index(b"POST /b")
    runs = [
        (backend, [data[:one], data[one:two], data[two:]])
        for one in range(head_end - 2, second + 1)
        for two in range(one + 1, len(data))
    ]
    for (_, pieces), outcome in zip(runs, driver.run_many(runs, timers=False), strict=True):
        where = f"reads of {[len(piece) for piece in pieces]}: {outcome.summary()}"
        assert _verdict(outcome) == (expect.statuses, expect.served), where


@pytest.mark.parametrize("backend", ["h11", "httptools"])
def test_many_pipelined_requests_in_one_read(backend: str, driver: Driver) -> None:
    # More than the 64 requests that may wait for their turn: the rest waits unread.
    requests = [b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % n for n in range(150)]
    requests.append(b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = b"".join(requests)
    for pieces in ([data], [data[:1000], data[1000:]]):
        outcome = driver.run(backend, pieces, timers=False)
        assert [seen.raw_path for seen in outcome.complete] == [
            *(b"/%d" % n for n in range(150)),
            b"/last",
        ]
        assert outcome.statuses == (200,) * 151
        assert outcome.closed


@pytest.mark.parametrize("backend", ["h11", "httptools"])
def test_a_websocket_handshake_switches_and_the_rest_is_websocket(
    backend: str, driver: Driver
) -> None:
    handshake = (
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    data = handshake + b"GET /not-http HTTP/1.1\r\nHost: a\r\n\r\n"
    for pieces in _splits(data):
        outcome = driver.run(backend, pieces, timers=False)
        assert outcome.websockets == [b"/chat"], outcome.summary()
        assert outcome.requests == []  # nothing after the handshake is HTTP
