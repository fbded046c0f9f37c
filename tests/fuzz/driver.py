"""Drive the real HTTP/1.1 protocol classes through an in-memory transport.

No socket and no mock of h11 or httptools: `H11Connection` / `HTTPToolsConnection` get the
bytes of a request stream in the pieces a test chooses (whole, or split into reads at any
offset), on a real event loop, with a real ASGI app behind them. What comes out is an
`Outcome`: what the app received, which responses were written, whether the connection
was closed, and whether it was left stalled (open, no app running, no timer that will
ever end it).

Timers are checked without waiting: on an asyncio loop the loop's clock is moved forward
(`Clock`), so a head-read timeout or a keep-alive close fires at once. uvloop keeps its
own clock; there the stall check is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from palfrey.protocols.context import ConnectionContext, ServerState
from palfrey.protocols.http11_response import DefaultHeaders
from palfrey.protocols.settings import HTTPLimits
from tests.helpers.plans import make_plan

#: The plan's connection settings (the defaults live in the config model only), with
#: limits small enough for the corpus to reach them.
_PLAN = make_plan(
    http={"max_head_size": 2048, "max_request_line": 512, "max_header_count": 16},
    limits={"max_body_size": 4096},
    timeouts={"keep_alive": 5.0, "header_read": 10.0},
    websocket={
        "backend": "wsproto",
        "ping_interval": None,
        "ping_timeout": None,
        "per_message_deflate": False,
    },
    server={"server_header": False, "date_header": False},
).connections
LIMITS = _PLAN.limits
_SETTLE_TURNS = 400  # loop turns before a case counts as not settling
_ADVANCE = 1000.0  # seconds the clock jumps to fire every timer a connection holds


@dataclass
class Seen:
    """One request as the app saw it."""

    method: str
    raw_path: bytes
    query: bytes
    version: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None = None  # None: the body never completed (disconnect)

    def key(self) -> tuple[Any, ...]:
        return (self.method, self.raw_path, self.query, self.version, self.headers, self.body)


@dataclass
class Outcome:
    """Everything observable about one connection."""

    requests: list[Seen] = field(default_factory=list)
    websockets: list[bytes] = field(default_factory=list)  # raw_path of each WebSocket scope
    output: bytes = b""
    closed: bool = False  # close(), abort() or write_eof()
    aborted: bool = False
    late_writes: int = 0  # bytes written after the connection was closed
    stalled: bool = False  # open, no app running, and no timer ended it
    unsettled: bool = False  # the loop never came to rest
    undelivered: int = 0  # bytes the connection never read (reading paused for good)
    errors: list[str] = field(default_factory=list)  # exceptions the loop reported
    statuses: tuple[int, ...] = ()
    bodies: tuple[bytes, ...] = ()
    parse_error: str | None = None

    @property
    def complete(self) -> list[Seen]:
        return [seen for seen in self.requests if seen.body is not None]

    def verdict(self) -> tuple[Any, ...]:
        """What must not depend on the backend or on how the bytes were split."""
        return (
            tuple(seen.key() for seen in self.complete),
            tuple(self.websockets),
            self.statuses,
            self.bodies,
            self.closed,
            self.stalled,
        )

    def summary(self) -> str:
        served = [
            (s.method, s.raw_path, s.query, s.version, len(s.body or b""), s.body is None)
            for s in self.requests
        ]
        return (
            f"statuses={list(self.statuses)} closed={self.closed} stalled={self.stalled}"
            f" served={served} websockets={self.websockets} late_writes={self.late_writes}"
            f" undelivered={self.undelivered} errors={self.errors} parse_error={self.parse_error}"
            f" unsettled={self.unsettled}"
        )


class MemoryTransport(asyncio.Transport):
    """What an asyncio socket transport offers a protocol, with no socket behind it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, outcome: Outcome) -> None:
        super().__init__()
        self._loop = loop
        self.outcome = outcome
        self.out = bytearray()
        self.protocol: Any = None
        self.reading = True
        self.closing = False
        self.eof = False
        self._lost = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self.eof:
            self.outcome.late_writes += len(data)
            return
        self.out += data

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self._loop.call_soon(self._connection_lost)

    def abort(self) -> None:
        self.outcome.aborted = True
        self.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]

    def get_write_buffer_size(self) -> int:
        return 0

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self.protocol.connection_lost(None)


class Clock:
    """A loop clock that can jump forward (asyncio's loop reads `loop.time()` for every
    timer; uvloop does not, so it is left alone)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.offset = 0.0
        self.loop = loop
        self.enabled = isinstance(loop, asyncio.BaseEventLoop)
        if self.enabled:
            real = loop.time
            loop.time = lambda: real() + self.offset  # type: ignore[method-assign]

    def next_timer(self) -> float | None:
        """Seconds until the earliest live timer of the loop (None: there is none)."""
        scheduled = [h for h in self.loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        if not scheduled:
            return None
        return max(min(h.when() for h in scheduled) - self.loop.time(), 0.0)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _app(outcome: Outcome) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            outcome.websockets.append(scope["raw_path"])
            return  # not accepted: the server answers 403
        seen = Seen(
            scope["method"],
            scope["raw_path"],
            scope["query_string"],
            scope["http_version"],
            tuple((bytes(n), bytes(v)) for n, v in scope["headers"]),
        )
        outcome.requests.append(seen)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        seen.body = b"".join(chunks)
        payload = b"%d:" % len(outcome.requests) + seen.body
        headers = [(b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


_WEBSOCKET = _PLAN.websocket
_DEFAULTS = DefaultHeaders(_PLAN.headers)


def context(outcome: Outcome, limits: HTTPLimits, websocket: bool) -> ConnectionContext:
    return ConnectionContext(
        app=_app(outcome),
        state=ServerState(),
        limits=limits,
        defaults=_DEFAULTS,
        websocket=_WEBSOCKET if websocket else None,
    )


def protocol_class(backend: str) -> Any:
    if backend == "httptools":
        from palfrey.protocols.http11_httptools import HTTPToolsConnection

        return HTTPToolsConnection
    from palfrey.protocols.http11_h11 import H11Connection

    return H11Connection


class Driver:
    """Runs cases on one event loop (created once: a loop per case would cost more than
    the case)."""

    def __init__(self, loop_name: str = "asyncio", classes: dict[str, Any] | None = None) -> None:
        self.classes = classes
        if loop_name == "uvloop":
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.clock = Clock(self.loop)
        self.loop.set_exception_handler(self._on_error)
        self._errors: list[str] = []

    def close(self) -> None:
        self.loop.close()

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self._errors.append(f"{context.get('message')}: {exc!r}")

    def run(
        self,
        backend: str,
        pieces: Sequence[bytes],
        *,
        limits: HTTPLimits = LIMITS,
        websocket: bool = True,
        timers: bool = True,
    ) -> Outcome:
        """Feed `pieces` as successive reads; return what happened."""
        return self.run_many(
            [(backend, pieces)], limits=limits, websocket=websocket, timers=timers
        )[0]

    def run_many(
        self,
        runs: Sequence[tuple[str, Sequence[bytes]]],
        *,
        limits: HTTPLimits = LIMITS,
        websocket: bool = True,
        timers: bool = True,
    ) -> list[Outcome]:
        """Several connections, one after the other, in one turn of the loop runner."""
        return self.loop.run_until_complete(self._run_many(runs, limits, websocket, timers))

    async def _run_many(
        self,
        runs: Sequence[tuple[str, Sequence[bytes]]],
        limits: HTTPLimits,
        websocket: bool,
        timers: bool,
    ) -> list[Outcome]:
        outcomes = []
        for backend, pieces in runs:
            outcome = Outcome()
            self._errors = []
            await self._drive(backend, pieces, outcome, limits, websocket, timers)
            outcome.errors = self._errors
            _parse_responses(outcome)
            outcomes.append(outcome)
        return outcomes

    async def _drive(
        self,
        backend: str,
        pieces: Sequence[bytes],
        outcome: Outcome,
        limits: HTTPLimits,
        websocket: bool,
        timers: bool,
    ) -> None:
        ctx = context(outcome, limits, websocket)
        transport = MemoryTransport(self.loop, outcome)
        cls = self.classes[backend] if self.classes else protocol_class(backend)
        protocol = cls(ctx)
        transport.protocol = protocol
        protocol.connection_made(transport)
        queue = [piece for piece in pieces if piece]
        while queue and not transport.closing:
            if not transport.reading:
                await self._settle(transport, ctx, outcome)
                if not transport.reading:
                    break
            data = queue.pop(0)
            try:
                transport.protocol.data_received(data)
            except Exception as exc:  # what an asyncio transport does: report, then abort
                self._errors.append(f"data_received() call failed: {exc!r}")
                transport.abort()
            await self._settle(transport, ctx, outcome)
        outcome.undelivered = sum(map(len, queue))
        if timers and self.clock.enabled:
            await self._fire_timers(transport, ctx, outcome)
            outcome.stalled = not (transport.closing or transport.eof) and not ctx.state.cycles
        outcome.closed = transport.closing or transport.eof
        outcome.output = bytes(transport.out)
        await self._tear_down(transport, ctx, outcome)

    async def _fire_timers(
        self, transport: MemoryTransport, ctx: ConnectionContext, outcome: Outcome
    ) -> None:
        # A timeout, then the half-close linger that follows it: jump to each deadline
        # in turn while the connection stays open.
        for _ in range(4):
            if transport.closing:
                return
            delay = self.clock.next_timer()
            if delay is None or delay > _ADVANCE:
                return
            self.clock.advance(delay + 0.001)
            await self._settle(transport, ctx, outcome)

    async def _settle(
        self, transport: MemoryTransport, ctx: ConnectionContext, outcome: Outcome
    ) -> None:
        """Run the loop until nothing is left to run without new bytes or time."""
        ready = getattr(self.loop, "_ready", None)
        if ready is not None:  # asyncio: the loop's own queue of ready callbacks
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)
                if not ready:
                    return
            outcome.unsettled = True
            return
        last: tuple[Any, ...] = ()
        steady = 0
        for _ in range(_SETTLE_TURNS):
            await asyncio.sleep(0)
            state = (
                len(transport.out),
                transport.closing,
                transport.eof,
                transport.reading,
                len(ctx.state.cycles),
                len(outcome.requests),
                sum(seen.body is not None for seen in outcome.requests),
                len(ctx.state.held_heads),
            )
            if state == last:
                steady += 1
                if steady >= 3:
                    return
            else:
                steady = 0
                last = state
        outcome.unsettled = True

    async def _tear_down(
        self, transport: MemoryTransport, ctx: ConnectionContext, outcome: Outcome
    ) -> None:
        if not transport._lost:
            transport.closing = True
            transport._connection_lost()
        for _ in range(20):
            await asyncio.sleep(0)
            if not ctx.state.cycles:
                break
        for cycle in list(ctx.state.cycles):
            if cycle.task is not None:
                cycle.task.cancel()
        await asyncio.sleep(0)


def _parse_responses(outcome: Outcome) -> None:
    """Split the output into final responses (1xx skipped). Responses to the app's HEAD
    requests carry no body; every other response here is framed by Content-Length."""
    data = outcome.output
    heads = [seen.method == "HEAD" for seen in outcome.requests if seen.body is not None]
    statuses: list[int] = []
    bodies: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            outcome.parse_error = f"incomplete head at {pos}"
            break
        lines = data[pos:end].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ")[1])
        except (IndexError, ValueError):
            outcome.parse_error = f"bad status line {lines[0]!r}"
            break
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        pos = end + 4
        if status < 200:
            continue
        is_head = status == 200 and len(statuses) < len(heads) and heads[len(statuses)]
        length = 0 if is_head else int(fields.get(b"content-length", b"0"))
        statuses.append(status)
        bodies.append(data[pos : pos + length] if status == 200 else b"")
        pos += length
    outcome.statuses = tuple(statuses)
    outcome.bodies = tuple(bodies)
