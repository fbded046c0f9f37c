"""The asyncio side of an HTTP/1.1 connection, shared by the h11 and httptools backends.

A backend only parses one complete request head (`parse_head`). Everything else lives
here, once: where each head ends and each body ends (request framing), the request rules,
scopes, pipelining, timers, flow control, response framing and error answers. That is how
both backends behave identically: they cannot disagree about where a request begins.

Framing (RFC 9112 §6.3). The stream is read as head, body, head, body... A head ends at
the first CRLF CRLF (leading empty lines skipped, §2.2); while it arrives it is held and
checked (`HeadScanner`); the complete head goes to the backend's parser. The body is then
framed here by its Content-Length or chunked coding (`http11_chunked`), whatever else the
head says: an Upgrade that is not taken (not WebSocket) changes nothing, the request is
served as plain HTTP with its body (RFC 9110 §7.8), and a parser never sees a body, so it
can never start a request inside one.

Flow control. Writing: the transport's pause_writing/resume_writing gate the app's `send`
(HTTPCycle awaits `drain`). Reading: the socket is paused while pipelined requests wait
for earlier responses, and while more than `limits.body_buffer` bytes of request body sit
unread by the app; `receive` resumes it.

Timers. One timer per connection, re-armed lazily: the idle keep-alive period and the
head-read period (slowloris) each store a start time, and the timer checks the deadline
when it fires instead of being cancelled and re-created for every request.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

from palfrey.asgi.http_cycle import HTTPCycle
from palfrey.asgi.types import Receive, Scope, Send
from palfrey.protocols.context import ConnectionContext, http_scope
from palfrey.protocols.http11_chunked import ChunkedDecoder, LengthDecoder
from palfrey.protocols.http11_response import (
    CONTINUE_100,
    chunk,
    encode,
    error_response,
)
from palfrey.protocols.limits import (
    KNOWN_METHODS,
    Framing,
    HeadScanner,
    ProtocolError,
    check_request_line,
    inspect_headers,
    origin_form,
    refusal,
)
from palfrey.protocols.websocket_core import wants_websocket
from palfrey.transports.asyncio_stream import addresses, connection_extensions, set_nodelay

_IDLE, _HEAD, _BUSY = 0, 1, 2
_MAX_PIPELINE = 64
_LAST_CHUNK = b"0\r\n\r\n"
_DISCARD_LIMIT = 1 << 20  # unread body skipped to keep a connection alive
_FILE_CHUNK = 65536
# RFC 9112 §9.6 tear-down: after a half-close, how long unread client bytes are read and
# discarded (waiting for the client's own close) before the socket is closed outright.
LINGER = 1.0
_SERVED_METHODS = KNOWN_METHODS - {b"CONNECT"}


async def _service_unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": b"Service Unavailable"})


class HTTP11Cycle(HTTPCycle):
    """An HTTPCycle plus the response framing only HTTP/1.1 needs (one object per request
    rather than a cycle and a side table; the fields are set in `on_head`)."""

    __slots__ = ("body_allowed", "chunked", "head_sent", "http11", "keep_alive", "remaining")

    http11: bool
    keep_alive: bool
    head_sent: bool
    chunked: bool
    remaining: int | None
    body_allowed: bool


Request = tuple[bytes, bytes, str, list[tuple[bytes, bytes]]]
"""A parsed head: method, target, HTTP version ("1.1"), fields (names lower-case)."""


@dataclass(frozen=True, slots=True)
class ProtocolSwitch:
    """An HTTP/1.1 request that asked to leave HTTP/1.1 (a WebSocket opening handshake,
    RFC 6455 §4.1), as the connection hands it over: its HTTP scope, built exactly as an
    HTTP request's would be (proxy headers and extensions applied), its field list and
    version, and the bytes the client sent after the head. The connection writes nothing
    after it."""

    scope: Scope
    headers: list[tuple[bytes, bytes]]
    version: str
    rest: bytes


class HTTP11Connection(asyncio.Protocol):
    """Everything about an HTTP/1.1 connection except parsing one request head."""

    def __init__(self, ctx: ConnectionContext) -> None:
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.cycle: HTTP11Cycle | None = None  # the request whose response is being written
        self.reading: HTTP11Cycle | None = None  # the request whose body is being parsed
        self.pipeline: deque[HTTP11Cycle] = deque()
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._read_paused = False
        self._closed = False
        self._rejected = False
        self._pending_error: ProtocolError | None = None
        self._to_start: HTTP11Cycle | None = None
        self._backlog: list[bytes] = []
        self._phase = _HEAD
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._got_bytes = False
        self._drain_at: float | None = None  # graceful shutdown: when an idle one closes
        self.server: Any = None
        self.client: Any = None
        self.scheme = "http"
        self.extensions: dict[str, Any] = {}
        #: A WebSocket upgrade request whose head was parsed; `_request` then calls
        #: `switch_protocol` with the bytes that followed it.
        self.upgrade_request: Request | None = None
        self._scanner: HeadScanner | None = None  # a head arriving in more than one read
        self._body: ChunkedDecoder | LengthDecoder | None = None

    # -- to be provided by a backend -------------------------------------------------

    def parse_head(self, head: bytes, eol: int) -> Request:
        """The backend's reading of one complete head (`head[:eol]` is the request line,
        `head` ends with CRLF CRLF). A head the parser refuses, or that the shared rules
        refuse where the parser is lenient, raises `refusal(head, limits)`."""
        raise NotImplementedError

    # -- framing ---------------------------------------------------------------------

    def head_pending(self) -> bool:
        """True while part of a request head has been received."""
        scanner = self._scanner
        return scanner is not None and scanner.started

    def feed(self, data: bytes) -> None:
        """Frame `data` into heads (parsed by the backend) and bodies (RFC 9112 §6.3)."""
        while data:
            body = self._body
            if body is not None:
                rest = body.feed(data)
                if rest is None:
                    return
                self._body = None
                self.on_message_end()
                data = rest
            elif self._scanner is None and data[0] > 13:
                # The common case: a head that starts a read (not after a CR or LF, which
                # only empty lines or an error can start). Found whole, it is parsed from
                # the read itself, with no copy when it is the whole read.
                end = data.find(b"\r\n\r\n")
                data = self._head_part(data) if end < 0 else self._request(data, end + 4)
            else:
                data = self._head_part(data)
            if data and len(self.pipeline) >= _MAX_PIPELINE:
                # Many tiny pipelined requests in one read must not queue without bound.
                self._backlog.append(data)
                self._pause_reading()
                return

    def _request(self, data: bytes, stop: int) -> bytes:
        """Parse and dispatch the complete head `data[:stop]`; return what follows it."""
        size = len(data)
        head = data if stop == size else data[:stop]
        limits = self.ctx.limits
        eol = head.find(b"\r\n")
        if stop > limits.max_head_size or eol > limits.max_request_line:
            raise refusal(head, limits)
        method, target, version, headers = self.parse_head(head, eol)
        if len(headers) > limits.max_header_count:  # one field per line: no obs-fold here
            raise refusal(head, limits)
        framing = self.on_head(method, target, version, headers)
        if framing.chunked:
            self._body = ChunkedDecoder(
                self.on_body,
                max_line=limits.max_request_line,
                max_trailer=limits.max_head_size,
            )
        elif framing.content_length:
            self._body = LengthDecoder(self.on_body, framing.content_length)
        elif self.upgrade_request is not None:
            # RFC 6455 §4.2: what follows the handshake is WebSocket.
            self.switch_protocol(data[stop:])
            return b""
        else:
            self.on_message_end()  # RFC 9112 §6.3 (7): no body
        return data[stop:] if stop < size else b""

    def _head_part(self, data: bytes) -> bytes:
        """A head that arrives in pieces or after empty lines: held and checked as it
        comes (`HeadScanner`); parsed once complete. Returns what follows it."""
        scanner = self._scanner
        if scanner is None:
            scanner = self._scanner = HeadScanner(self.ctx.limits)
        stop = scanner.feed(data)
        if stop < 0:
            return b""
        self._scanner = None
        return self._request(bytes(scanner.buffer), stop)

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ctx.state.connections.add(self)
        self.server, self.client = addresses(transport)
        set_nodelay(transport)
        found = connection_extensions(transport)
        self.extensions = {"http.response.pathsend": {}, **self.ctx.extensions, **found}
        if "tls" in found:
            self.scheme = "https"
        # The head-read timeout also bounds how long a new connection may stay silent.
        self._arm(_HEAD)
        if self.ctx.state.shutting_down:
            # Accepted just as the listeners closed: its client may already have sent a
            # request, which is answered (with `Connection: close`) rather than reset.
            self.shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.state.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for cycle in (self.cycle, self.reading, *self.pipeline):
            if cycle is not None and not cycle.complete:
                cycle.disconnect()
        self.pipeline.clear()
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._backlog or len(self.pipeline) >= _MAX_PIPELINE:
            self._backlog.append(data)
            self._pause_reading()
            return
        self._got_bytes = True
        try:
            self.feed(data)
        except ProtocolError as exc:
            self._reject(exc)
        if self._to_start is not None:
            cycle, self._to_start = self._to_start, None
            self._run(cycle)
        if self.cycle is None and self._phase == _IDLE and self.head_pending():
            self._arm(_HEAD)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # -- events from the backend -------------------------------------------------------

    def on_head(
        self, method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
    ) -> Framing:
        """A complete request head (header names lower-cased); returns its body framing."""
        if (
            version == "1.1"
            and target[:1] == b"/"
            and method in _SERVED_METHODS
            and b"#" not in target
        ):
            http11 = True  # the common request line: nothing for check_request_line to do
        else:
            version = check_request_line(method, target, version)
            http11 = version == "1.1"
        framing = inspect_headers(headers, http11)
        if framing.upgrade and self.ctx.websocket is not None and wants_websocket(headers):
            return self._websocket_request(method, target, version, headers, framing)
        length = framing.content_length
        limits = self.ctx.limits
        if (
            length is not None
            and limits.max_body_size is not None
            and length > limits.max_body_size
        ):
            raise ProtocolError(413, "Request body too large")
        cycle = HTTP11Cycle(
            self._scope(method, target, version, headers),
            self,
            self.ctx,
            framing.chunked or bool(length),
            framing.expect_continue,
        )
        cycle.http11 = http11
        cycle.keep_alive = framing.keep_alive
        cycle.head_sent = cycle.chunked = False
        cycle.remaining = None
        cycle.body_allowed = True
        self.reading = cycle
        self._phase = _BUSY
        if self.cycle is None:
            self.cycle = self._to_start = cycle
        else:
            self.pipeline.append(cycle)
            self._pause_reading()
        return framing

    def on_body(self, data: bytes) -> None:
        cycle = self.reading
        if cycle is None:
            return
        limit = self.ctx.limits.max_body_size
        if limit is not None and cycle.body_received + len(data) > limit:
            raise ProtocolError(413, "Request body too large")
        cycle.feed_body(data)
        if cycle.complete and cycle.body_received > _DISCARD_LIMIT:
            self._close()
        elif cycle.buffered > self.ctx.limits.body_buffer:
            # Strictly more than the buffer: a body of exactly `body_buffer` bytes (the
            # 64 KiB POST) is taken whole without a pause/resume pair of syscalls.
            self._pause_reading()

    def on_message_end(self) -> None:
        cycle, self.reading = self.reading, None
        if cycle is not None:
            cycle.body_done()
            if cycle.complete and self.cycle is None:
                self._next()  # a discarded body has ended: the connection is free

    # -- the scope ---------------------------------------------------------------------

    def _scope(
        self, method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
    ) -> Scope:
        if target[:1] != b"/":
            target = origin_form(target)
        raw_path, _, query = target.partition(b"?")  # no fragment: check_request_line
        return http_scope(
            self.ctx,
            method,
            raw_path,
            query,
            version,
            self.server,
            self.client,
            self.scheme,
            headers,
            self.extensions,
        )

    # -- running the app ---------------------------------------------------------------

    def _run(self, cycle: HTTP11Cycle) -> None:
        ctx = self.ctx
        app = ctx.app
        limit = ctx.concurrency
        if limit is not None and (
            len(ctx.state.connections) > limit or len(ctx.state.cycles) >= limit
        ):
            app = _service_unavailable
            if ctx.observer is not None:
                ctx.observer.refused(503)
        cycle.start(app, self.loop)

    # -- HTTPChannel: what the cycle calls ---------------------------------------------

    def write_response(
        self, cycle: HTTPCycle, status: int, headers: Any, body: bytes, more_body: bool
    ) -> None:
        current = self.cycle
        if cycle is not current or current is None or self._closed:
            return
        head, length = self._encode_head(current, status, headers, None if more_body else len(body))
        allowed = current.body_allowed
        if more_body:
            current.remaining = length
            if body:
                self._write(current, body, more_body, head)
            else:
                self.transport.write(head)
        elif allowed and length is not None and length == len(body) < 16384:
            # The common small response, whole and framed by its Content-Length: one
            # write (one send syscall), head and body together.
            current.remaining = 0
            self.transport.write(head + body)
            self._complete(current)
        else:
            current.remaining = length
            self._write(current, body, more_body, head)
            self._complete(current)

    def _encode_head(
        self, current: HTTP11Cycle, status: int, headers: Any, body_length: int | None
    ) -> tuple[bytes, int | None]:
        """Encode the response head and record its framing on `current`; returns the head
        and the Content-Length it announces (RFC 9110 §6.4.1: no body for HEAD, 204, 304)."""
        allowed = status not in (204, 304) and current.scope["method"] != "HEAD"
        head, length, chunked, keep_alive = encode(
            status,
            headers,
            self.ctx.defaults,
            current.http11,
            current.keep_alive and not self.ctx.state.shutting_down,
            allowed,
            body_length,
        )
        current.head_sent = True
        current.head_bytes = len(head)
        current.chunked = chunked
        current.keep_alive = keep_alive
        current.body_allowed = allowed
        return head, length

    def write_body(self, cycle: HTTPCycle, body: bytes, more_body: bool) -> None:
        current = self.cycle
        if cycle is not current or current is None or self._closed:
            return
        self._write(current, body, more_body, b"")
        if not more_body:
            self._complete(current)

    def _write(self, cycle: HTTP11Cycle, body: bytes, more_body: bool, head: bytes) -> None:
        if not cycle.body_allowed:
            if head:
                self.transport.write(head)
            return
        remaining = cycle.remaining
        if remaining is not None:
            remaining = cycle.remaining = remaining - len(body)
            if remaining < 0:
                raise RuntimeError("Response content longer than Content-Length")
            if not more_body and remaining:
                cycle.keep_alive = False  # the body is short: the framing is broken
        elif cycle.chunked:
            if body:
                body = chunk(body)
            if not more_body:
                body += _LAST_CHUNK
        if len(body) < 16384:
            # One write (one send syscall) for a small response, head and body together.
            self.transport.write(head + body if head else body)
        elif head:
            # No copy of a large body; uvloop sends both in one writev.
            self.transport.writelines((head, body))
        else:
            self.transport.write(body)

    async def write_file(self, cycle: HTTPCycle, status: int, headers: Any, path: str) -> None:
        current = self.cycle
        if cycle is not current or current is None or self._closed:
            return
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            head, _ = self._encode_head(current, status, headers, size)
            current.remaining = None
            chunked, allowed = current.chunked, current.body_allowed
            self.transport.write(head)
            if allowed:
                cycle.bytes_sent = await self._send_file(file, size, chunked)
        if not self._closed:
            if allowed and chunked:
                self.transport.write(_LAST_CHUNK)
            self._complete(current)

    async def _send_file(self, file: Any, size: int, chunked: bool) -> int:
        if not chunked and self._can_sendfile():
            try:
                return await self.loop.sendfile(self.transport, file, 0, size, fallback=False)
            except (asyncio.SendfileNotAvailableError, NotImplementedError):
                pass
        sent = 0
        while not self._closed:
            data = await self.loop.run_in_executor(None, file.read, _FILE_CHUNK)
            if not data:
                break
            sent += len(data)
            self.transport.write(chunk(data) if chunked else data)
            if self.write_paused:
                await self.drain()
        return sent

    def _can_sendfile(self) -> bool:
        # Zero-copy needs a plain socket: not TLS, and an asyncio loop (uvloop has none).
        return (
            isinstance(self.loop, asyncio.BaseEventLoop)
            and self.transport.get_extra_info("sslcontext") is None
            and not self.write_paused
        )

    async def drain(self) -> None:
        if not self.write_paused or self._closed:
            return
        if self._drain is None:
            self._drain = self.loop.create_future()
        await self._drain

    def _wake_drain(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def want_body(self, cycle: HTTPCycle) -> None:
        if self._read_paused and not self.pipeline and not self._backlog and not self._rejected:
            self._resume_reading()

    def send_continue(self, cycle: HTTPCycle) -> None:
        # Only before the final response head, and only if a body is still expected.
        current = self.cycle
        if (
            cycle is current
            and current is not None
            and not current.head_sent
            and current.more_body
            and not self._closed
        ):
            self.transport.write(CONTINUE_100)

    def app_failed(self, cycle: HTTPCycle) -> None:
        # The response is partly written: the client must see the framing break
        # (RFC 9112 §8: an incomplete message), so the connection ends here.
        self._close()

    def app_finished(self, cycle: HTTPCycle) -> None:
        if cycle is self.cycle and not cycle.complete and not self._closed:
            self._close()  # the app gave up without a response (disconnect, cancellation)

    # -- after a response -----------------------------------------------------------

    def _complete(self, cycle: HTTP11Cycle) -> None:
        cycle.complete = True  # HTTPCycle.finish, inlined
        if cycle._waiter is not None:
            cycle._wake()  # a waiting `receive` now reports a disconnect
        ctx = self.ctx
        state = ctx.state
        state.total_requests += 1  # ServerState.count_request, inlined
        if state.request_budget is not None:
            state.check_budget()
        if ctx.observe is not None:
            ctx.observe(cycle)  # the access log and metrics (palfrey.observe)
        self.cycle = None
        if not cycle.keep_alive or state.shutting_down:
            # The response said `Connection: close` (RFC 9112 §9.6).
            self._linger_close()
        elif cycle is self.reading:
            # The app answered before the request body ended. Without `100 Continue` the
            # client may never send it (RFC 9110 §10.1.1): close. Otherwise skip the rest.
            if cycle.expect_continue:
                self._close()
        else:
            self._next()

    def _next(self) -> None:
        if self.pipeline:
            cycle = self.cycle = self.pipeline.popleft()
            self._run(cycle)
            if not self.pipeline and not self._rejected:
                self._resume_reading()
        elif self._pending_error is not None:
            self._send_error(self._pending_error)
        else:
            self._arm(_HEAD if self.head_pending() else _IDLE)
            if self._backlog:
                backlog, self._backlog = self._backlog, []
                self.loop.call_soon(self._replay, backlog)
            elif self._read_paused and not self._rejected:
                self._resume_reading()

    def _replay(self, backlog: list[bytes]) -> None:
        for data in backlog:
            if self._closed:
                return
            self.data_received(data)
        if not self._backlog and self._read_paused and not self.pipeline:
            self._resume_reading()

    # -- refusing a request --------------------------------------------------------------

    def _reject(self, exc: ProtocolError) -> None:
        """Answer a bad request with `exc.status` after earlier responses, then close."""
        self._rejected = True
        self._pause_reading()
        broken, self.reading = self.reading, None
        if broken is not None:
            if broken in self.pipeline:
                self.pipeline.remove(broken)
            if self._to_start is broken:
                self._to_start = None
                self.cycle = None
            broken.disconnect()
        if self.cycle is None:
            self._send_error(exc)
        elif self.cycle is broken:
            if broken.started:
                self._close()
            else:
                self.cycle = None
                self._send_error(exc)
        else:
            self._pending_error = exc

    def _send_error(self, exc: ProtocolError) -> None:
        if self.ctx.observer is not None:
            self.ctx.observer.refused(exc.status)
        if not self._closed:
            self.transport.write(error_response(exc.status, exc.reason, self.ctx.defaults))
        # Unread request bytes (a refused body) must not turn into an RST that destroys
        # the error response before the client reads it (RFC 9112 §9.6).
        self._linger_close()

    # -- timers ---------------------------------------------------------------------------

    def _arm(self, phase: int) -> None:
        self._phase = phase
        if phase == _IDLE:
            self._got_bytes = False
            timeout: float | None = self.ctx.limits.keep_alive
        else:
            timeout = self.ctx.limits.header_read
        if timeout is None or self._closed:
            return
        now = self._since = self.loop.time()
        if self._timer is None or self._timer_at > now + timeout:
            self._schedule(now + timeout)

    def _schedule(self, deadline: float) -> None:
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _deadline(self) -> float | None:
        limits = self.ctx.limits
        timeout = limits.keep_alive if self._phase == _IDLE else limits.header_read
        deadline = None if timeout is None else self._since + timeout
        drain = self._drain_at
        if drain is not None and (self._phase == _IDLE or not self._got_bytes):
            # Draining, and no byte of a next request has arrived: the grace applies (a
            # head that has begun gets its full head-read time instead).
            deadline = drain if deadline is None else min(drain, deadline)
        return deadline

    def _on_timer(self) -> None:
        self._timer = None
        if self._phase == _BUSY or self._closed or self.cycle is not None:
            return
        deadline = self._deadline()
        if deadline is None:
            return
        if self.loop.time() < deadline:
            self._schedule(deadline)
        elif self._phase == _HEAD and self._got_bytes and not self._rejected:
            # RFC 9110 §15.5.9: the head did not arrive in time.
            self._rejected = True
            self._send_error(ProtocolError(408, "Request Timeout"))
        elif self._drain_at is not None:
            self._linger_close()  # graceful shutdown: the idle grace is over
        else:
            self._close()

    # -- transport helpers ---------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and not self._closed:
            self._read_paused = False
            self.transport.resume_reading()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()
            # connection_lost follows once buffered data is flushed; an app still running
            # learns now that its client is gone.
            for cycle in (self.cycle, self.reading, *self.pipeline):
                if cycle is not None and not cycle.complete:
                    cycle.disconnect()

    def _linger_close(self) -> None:
        """Tear the connection down after a complete exchange (RFC 9112 §9.6): half-close
        (FIN after the buffered response), then read and discard whatever the client still
        sends until it closes too, for at most `LINGER` seconds. Closing outright with
        unread bytes in the receive buffer makes the kernel answer with RST, which can
        destroy a response the client has not read yet."""
        if self._closed:
            return
        transport = self.transport
        if not transport.can_write_eof():
            self._close()  # TLS: close_notify then close is the transport's own tear-down
            return
        self._closed = self._rejected = True  # no more writes; reads are discarded
        for cycle in (self.cycle, self.reading, *self.pipeline):
            if cycle is not None and not cycle.complete:
                cycle.disconnect()
        transport.write_eof()
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if self._timer is not None:
            self._timer.cancel()
        # eof_received (the client's close) ends it sooner: the transport then closes.
        self._timer = self.loop.call_later(LINGER, transport.close)

    def shutdown(self) -> None:
        """Graceful shutdown (RFC 9112 §9.6). A request in progress finishes and its
        response carries `Connection: close`. An idle keep-alive connection is not closed
        at once, since a request may already be on its way: for `state.drain_grace`
        seconds the next request is answered with `Connection: close`; after that an idle
        connection is torn down with a half-close (`_linger_close`)."""
        if self._closed or self._drain_at is not None:
            return
        self._drain_at = self.loop.time() + self.ctx.state.drain_grace
        if self.cycle is None and self.reading is None and not self.pipeline:
            self._schedule(self._drain_at)

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.abort()

    # -- WebSocket upgrade (RFC 6455 §4.2) -------------------------------------------------

    def _websocket_request(
        self,
        method: bytes,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        framing: Framing,
    ) -> Framing:
        if framing.chunked or framing.content_length:
            raise ProtocolError(400, "A WebSocket handshake has no body")
        if self.cycle is not None or self.pipeline:
            raise ProtocolError(400, "WebSocket upgrade pipelined behind another request")
        self.upgrade_request = (method, target, version, headers)
        self._phase = _BUSY
        return Framing(keep_alive=False)

    def switch_protocol(self, rest: bytes) -> None:
        """The parser stopped after an upgrade request: the transport leaves HTTP/1.1.
        The request goes out as a `ProtocolSwitch`; what comes back is the protocol that
        owns the transport from now on, or a refusal to write before closing."""
        request, self.upgrade_request = self.upgrade_request, None
        assert request is not None
        self._rejected = True  # whatever happens next, no more HTTP/1.1 on this connection
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        from palfrey.protocols.websocket_http11 import upgrade

        method, target, version, headers = request
        switch = ProtocolSwitch(
            self._scope(method, target, version, headers), headers, version, rest
        )
        outcome = upgrade(self.ctx, switch)
        self._closed = True  # the transport is the WebSocket's, or closing after a refusal
        transport = self.transport
        if isinstance(outcome, bytes):
            transport.write(outcome)
            transport.close()
            return
        connections = self.ctx.state.connections
        connections.discard(self)
        connections.add(outcome)
        transport.set_protocol(outcome)
        outcome.connection_made(transport)
