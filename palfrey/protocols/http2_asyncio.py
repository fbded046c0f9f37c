"""HTTP/2 over an asyncio stream transport: the adapter between the sans-IO
`ServerConnection` and the shared ASGI HTTP cycle.

`HTTP2Protocol` is the transport's protocol: it feeds received bytes (and the loop's
clock) to the connection, turns its events into streams and cycles, and writes what the
connection has queued in one write per read, or per loop turn when an application writes
later, however many streams wrote. `HTTP2Stream` is one request's `HTTPChannel`.

Backpressure both ways (RFC 9113 §5.2): request body credit is returned as the
application reads (`want_body`, at half a window, so the client is not left without
credit while the application waits); an application's `send` waits while its stream has
data held for flow-control credit or the transport has paused writing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from palfrey.asgi.http_cycle import HTTPCycle
from palfrey.protocols.context import http_scope
from palfrey.protocols.http2_connection import ServerConnection
from palfrey.protocols.http2_events import (
    ConnectionTerminated,
    DataReceived,
    PingAcked,
    RequestReceived,
    StreamDrained,
    StreamReset,
)
from palfrey.protocols.http2_fields import (
    ENCODER,
    Request,
    decode_settings,
    plain_fields,
    response_block,
)
from palfrey.protocols.http2_frames import ErrorCode
from palfrey.protocols.http2_websocket import start_websocket
from palfrey.protocols.http11_base import LINGER
from palfrey.protocols.settings import HTTP2Settings
from palfrey.transports.asyncio_stream import addresses, connection_extensions, set_nodelay

if TYPE_CHECKING:
    from palfrey.asgi.types import Receive, Scope, Send
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.http2_websocket import H2WebSocket
    from palfrey.protocols.settings import WebSocketSettings

__all__ = ["HTTP2Protocol", "HTTP2Stream", "Upgrade"]

_FILE_CHUNK = 65536
_WRITELINES = 65536  # DATA bytes in one flush from which the pieces are not joined
_UPGRADE_FIELDS = frozenset((b"connection", b"upgrade", b"http2-settings", b"keep-alive"))


class Upgrade:
    """An HTTP/1.1 request that asked for `Upgrade: h2c` (RFC 7540 §3.2): it becomes
    stream 1 of the new connection, its body already read in full."""

    __slots__ = ("body", "headers", "method", "rest", "settings", "target")

    def __init__(
        self,
        *,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        settings: bytes,
        rest: bytes = b"",
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.settings = settings  # the HTTP2-Settings field value
        self.rest = rest  # what followed the request (the client preface and frames)


def plain_response(status: int, text: bytes) -> Callable[[Scope, Receive, Send], Any]:
    """An ASGI app that answers every request with `status` and a short text."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text})

    return app


_SERVICE_UNAVAILABLE = plain_response(503, b"Service Unavailable")
_CONNECT_REFUSED = plain_response(405, b"CONNECT is not supported")  # RFC 9110 §9.3.6
_TOO_LARGE = plain_response(413, b"Request body too large")


class HTTP2Stream:
    """One request stream: the HTTPChannel its HTTPCycle writes to."""

    __slots__ = (
        "_drain",
        "_trailer_fields",
        "acked",
        "app_done",
        "body_allowed",
        "closed",
        "conn",
        "cycle",
        "ended",
        "received",
        "remote_ended",
        "stream_id",
        "want_trailers",
        "write_paused",
        "ws",
    )

    def __init__(self, conn: HTTP2Protocol, stream_id: int, remote_ended: bool) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.cycle: HTTPCycle | None = None
        self.write_paused = conn.write_blocked
        self.closed = False  # reset, or the connection is gone
        self.ended = False  # END_STREAM queued
        self.app_done = False
        self.body_allowed = True
        self.want_trailers = False  # the app announced trailers: they end the stream
        self.remote_ended = remote_ended  # the client's END_STREAM has arrived
        self.ws: H2WebSocket | None = None  # RFC 8441: the stream carries a WebSocket
        self.received = 0  # request body bytes delivered
        self.acked = 0  # of which returned to the client with WINDOW_UPDATE
        self._trailer_fields: list[tuple[bytes, bytes]] = []
        self._drain: asyncio.Future[None] | None = None

    # -- HTTPChannel -------------------------------------------------------------------

    def write_response(
        self, cycle: HTTPCycle, status: int, headers: Any, body: bytes, more_body: bool
    ) -> None:
        if self.closed:
            return
        conn = self.conn
        block = response_block(status, headers, conn.ctx.defaults)
        if cycle.scope["method"] == "HEAD" or status in (204, 304):
            self.body_allowed = False
            body = b""
        trailers = self.want_trailers = cycle.trailers
        if not more_body and not body and not trailers:
            self.ended = True
            conn.core.send_headers(self.stream_id, block, True)
            self._complete(cycle)
        else:
            conn.core.send_headers(self.stream_id, block, False)
            if body or not more_body:
                self._send(cycle, body, more_body)
        conn.want_flush()

    def write_body(self, cycle: HTTPCycle, body: bytes, more_body: bool) -> None:
        if self.closed:
            return
        if self.ended:
            raise RuntimeError("Response body sent after the response ended")
        if not self.body_allowed:
            body = b""
        if body or not more_body:
            self._send(cycle, body, more_body)
            self.conn.want_flush()

    def _send(self, cycle: HTTPCycle, body: bytes, more_body: bool) -> None:
        conn = self.conn
        end = not more_body and not self.want_trailers
        if end:
            self.ended = True
        conn.core.send_data(self.stream_id, body, end)
        if end:
            self._complete(cycle)
        elif conn.core.pending(self.stream_id):
            self.write_paused = True

    def _complete(self, cycle: HTTPCycle) -> None:
        if not cycle.complete:
            cycle.finish()
        self.conn.request_done(self, cycle)

    def write_trailers(self, cycle: HTTPCycle, headers: Any, more_trailers: bool) -> None:
        """`http.response.trailers`: a HEADERS frame that ends the stream (§8.1)."""
        if self.closed or self.ended:
            return
        self._trailer_fields.extend(plain_fields(headers))
        if more_trailers:
            return
        self.ended = True
        conn = self.conn
        conn.core.send_trailers(self.stream_id, ENCODER.block(self._trailer_fields))
        self._complete(cycle)
        conn.want_flush()

    def write_early_hint(self, cycle: HTTPCycle, links: Iterable[bytes]) -> None:
        """`http.response.early_hint`: a 103 informational response (RFC 8297)."""
        if self.closed:
            return
        fields = [(b"link", bytes(link)) for link in links]
        self.conn.core.send_headers(self.stream_id, ENCODER.status(103) + ENCODER.block(fields))
        self.conn.want_flush()

    async def write_file(self, cycle: HTTPCycle, status: int, headers: Any, path: str) -> None:
        loop = self.conn.loop
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            headers = [*headers, (b"content-length", str(size).encode())]
            if not size:
                self.write_response(cycle, status, headers, b"", False)
                return
            self.write_response(cycle, status, headers, b"", True)
            left = size
            while left > 0 and not self.closed:
                data = await loop.run_in_executor(None, file.read, min(_FILE_CHUNK, left))
                if not data:
                    break
                left -= len(data)
                cycle.bytes_sent += len(data)
                self.write_body(cycle, data, left > 0)
                if self.write_paused and left > 0:
                    await self.drain()
        if left > 0 and not self.closed:
            self.app_failed(cycle)  # the file shrank: the response cannot be completed

    async def drain(self) -> None:
        if not self.write_paused or self.closed:
            return
        if self._drain is None:
            self._drain = self.conn.loop.create_future()
        await self._drain

    def want_body(self, cycle: HTTPCycle) -> None:
        # §6.9: return credit as the app consumes; at half a window, so the client has
        # credit left while the app waits, and few WINDOW_UPDATE frames go out.
        unacked = self.received - cycle.buffered - self.acked
        conn = self.conn
        if unacked >= conn.settings.initial_window_size >> 1 and cycle.more_body:
            self.open_window(unacked)

    def open_window(self, size: int) -> None:
        self.acked += size
        self.conn.core.acknowledge(self.stream_id, size)
        self.conn.want_flush()

    def send_continue(self, cycle: HTTPCycle) -> None:
        """HTTP/2 needs no `100 Continue`: flow control already paces the body."""

    def app_failed(self, cycle: HTTPCycle) -> None:
        # §8.1: a response that cannot be completed ends with RST_STREAM.
        self.conn.reset(self, ErrorCode.INTERNAL_ERROR)

    def app_finished(self, cycle: HTTPCycle) -> None:
        if not cycle.complete and not self.closed:
            self.conn.reset(self, ErrorCode.INTERNAL_ERROR)
        # Dropping the cycle breaks the stream <-> cycle reference cycle, so a request's
        # objects (scope, task, buffers) are freed by reference counting at once instead
        # of by the cyclic GC (a tenth of the CPU under load when they were left to it).
        self.cycle = None
        self.app_done = True
        self.conn.retire(self)

    # -- what the connection calls -------------------------------------------------------

    def send_raw(self, data: bytes, end: bool) -> None:
        """DATA for a non-HTTP use of the stream (RFC 8441 WebSocket frames)."""
        if self.closed or self.ended:
            return
        self.ended = end
        core = self.conn.core
        core.send_data(self.stream_id, data, end)
        if core.pending(self.stream_id):
            self.write_paused = True
        self.conn.want_flush()
        if end:
            self.conn.retire(self)

    def drained(self) -> None:
        """Held data has been sent: the app may write again (unless the transport is
        paused)."""
        if self.write_paused and not self.conn.write_blocked:
            self.write_paused = False
            self.wake()

    def wake(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """The stream is gone (reset or connection lost): wake and release the app."""
        self.closed = True
        self.write_paused = False
        self.wake()
        if self.cycle is not None and not self.cycle.complete:
            self.cycle.disconnect()
        if self.ws is not None:
            self.ws.lost()


class HTTP2Protocol(asyncio.Protocol):
    """An HTTP/2 connection on an asyncio transport: one HTTPCycle per stream."""

    def __init__(
        self,
        ctx: ConnectionContext,
        settings: HTTP2Settings,
        *,
        upgrade: Upgrade | None = None,
        websocket: WebSocketSettings | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.core: ServerConnection = None  # type: ignore[assignment]
        self.streams: dict[int, HTTP2Stream] = {}
        self.write_blocked = False  # the transport asked us to pause writing
        self.upgrade = upgrade
        self.websocket = websocket
        self.server: Any = None
        self.client: Any = None
        self.scheme = "http"
        self.extensions: dict[str, Any] = {}
        self._closed = False
        self._goaway = False
        self._receiving = False  # inside data_received: it flushes when done
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._last_read = 0.0
        self._ping_out = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ctx.state.connections.add(self)
        self.server, self.client = addresses(transport)
        set_nodelay(transport)
        self.extensions = {
            "http.response.pathsend": {},
            "http.response.trailers": {},
            "http.response.early_hint": {},
            **self.ctx.extensions,
        }
        found = connection_extensions(transport)
        self.extensions.update(found)
        if "tls" in found:
            self.scheme = "https"
        now = self.loop.time()
        upgrade, self.upgrade = self.upgrade, None
        # The negotiator only upgrades with a valid HTTP2-Settings; b"" keeps stream 1.
        settings = None if upgrade is None else decode_settings(upgrade.settings) or b""
        self.core = ServerConnection(self.settings, now, upgrade_settings=settings)
        self._idle_since = self._last_read = now
        self._flush()
        if upgrade is not None and not self.core.closed:
            self._upgraded_request(upgrade)
        if self.ctx.state.shutting_down:
            self.shutdown()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.state.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in list(self.streams.values()):
            stream.close()
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        now = self._last_read = self.loop.time()
        events = self.core.receive(data, now)
        last = events[-1] if events else None
        if type(last) is ConnectionTerminated and not last.remote:
            # A connection error: GOAWAY is queued and nothing in this read is served.
            self._terminated(last)
            return
        self._receiving = True
        try:
            for event in events:
                kind = type(event)
                if kind is RequestReceived:
                    self._begin(event)  # type: ignore[arg-type]
                elif kind is DataReceived:
                    self._data(event)  # type: ignore[arg-type]
                else:
                    self._control(event)
                if self._closed:
                    return
        finally:
            self._receiving = False
        self._flush()

    def pause_writing(self) -> None:
        self.write_blocked = True
        for stream in self.streams.values():
            stream.write_paused = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        core = self.core
        for stream in self.streams.values():
            if not core.pending(stream.stream_id):
                stream.write_paused = False
                stream.wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- events ----------------------------------------------------------------------------

    def _begin(self, event: RequestReceived) -> None:
        sid = event.stream_id
        request = event.request
        stream = HTTP2Stream(self, sid, event.ended)
        self.streams[sid] = stream
        scope = self._scope(request)
        ctx = self.ctx
        app = ctx.app
        length = request.content_length
        limit = ctx.limits.max_body_size
        if request.protocol is not None:
            problem = start_websocket(self, stream, scope, request)
            if problem is None:
                return
            app = plain_response(*problem)
        elif request.method == b"CONNECT":
            app = _CONNECT_REFUSED
        elif limit is not None and length is not None and length > limit:
            app = _TOO_LARGE
        elif ctx.concurrency is not None and len(ctx.state.cycles) >= ctx.concurrency:
            app = _SERVICE_UNAVAILABLE
        cycle = HTTPCycle(scope, stream, ctx, more_body=not event.ended)
        stream.cycle = cycle
        cycle.start(app, self.loop)

    def _data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return  # the stream's app has finished; the connection checks the rest
        data = event.data
        if event.ended:
            stream.remote_ended = True
        if stream.ws is not None:
            stream.ws.data(data)
            if event.ended:
                stream.ws.remote_end()
                self.retire(stream)
            return
        cycle = stream.cycle
        if cycle is None:
            return
        if data:
            stream.received += len(data)
            limit = self.ctx.limits.max_body_size
            if limit is not None and cycle.body_received + len(data) > limit:
                self._too_large(stream, cycle)
                return
            cycle.feed_body(data)
        if event.ended:
            cycle.body_done()

    def _too_large(self, stream: HTTP2Stream, cycle: HTTPCycle) -> None:
        if not cycle.started:
            cycle.started = True
            cycle.status = 413
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            stream.write_response(cycle, 413, headers, b"Request body too large", False)
        self.reset(stream, ErrorCode.CANCEL if not stream.ended else ErrorCode.NO_ERROR)

    def _control(self, event: Any) -> None:
        kind = type(event)
        if kind is StreamReset:
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.close()
                self._maybe_done()
        elif kind is StreamDrained:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.drained()
                self.retire(stream)
        elif kind is PingAcked:
            self._ping_out = False
        elif kind is ConnectionTerminated:
            self._terminated(event)  # the client's GOAWAY, after the streams it opened

    def _terminated(self, event: ConnectionTerminated) -> None:
        if event.remote and event.code == ErrorCode.NO_ERROR:
            # The client is leaving: the streams in flight finish (§6.8), then we close.
            self.shutdown()
            return
        self._flush()
        self._close()

    # -- what streams call -------------------------------------------------------------

    def request_done(self, stream: HTTP2Stream, cycle: HTTPCycle) -> None:
        ctx = self.ctx
        ctx.state.count_request()
        if ctx.access_log is not None:
            elapsed = self.loop.time() - cycle.start_time
            ctx.access_log(cycle.scope, cycle.status, cycle.bytes_sent, elapsed)

    def retire(self, stream: HTTP2Stream) -> None:
        """Forget a stream once its app has returned and its response is all sent."""
        # A WebSocket's session outlives its stream: the stream is done once both
        # sides have ended it.
        done = stream.app_done or (stream.ws is not None and stream.remote_ended)
        if done and (stream.closed or (stream.ended and not self.core.pending(stream.stream_id))):
            if self.streams.get(stream.stream_id) is stream:
                del self.streams[stream.stream_id]
            self._maybe_done()

    def reset(self, stream: HTTP2Stream, code: ErrorCode) -> None:
        if self.streams.get(stream.stream_id) is stream and stream.app_done:
            del self.streams[stream.stream_id]
        if not stream.closed and not self._closed:
            stream.close()
            self.core.reset_stream(stream.stream_id, code)
            self.want_flush()
        self._maybe_done()

    def want_flush(self) -> None:
        if self._flush_handle is None and not self._receiving and not self._closed:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        if self._closed:
            return
        parts, size = self.core.output()
        if size >= _WRITELINES:
            # Response bodies of this size go to the transport as they are: joining
            # them first would copy every byte once more.
            self.transport.writelines(parts)
        elif parts:
            self.transport.write(b"".join(parts))

    # -- the scope ---------------------------------------------------------------------

    def _scope(self, request: Request) -> Scope:
        raw_path, _, query = request.path.partition(b"?")
        scheme = request.scheme
        return http_scope(
            self.ctx,
            request.method,
            raw_path,
            query,
            "2",
            self.server,
            self.client,
            scheme.decode("ascii") if scheme in (b"http", b"https") else self.scheme,
            list(request.headers),  # the request may be a cached one: the app gets a copy
            self.extensions,
        )

    def _upgraded_request(self, upgrade: Upgrade) -> None:
        """Stream 1 is the HTTP/1.1 request that asked for h2c (RFC 7540 §3.2)."""
        headers = [(n, v) for n, v in upgrade.headers if n not in _UPGRADE_FIELDS]
        authority = next((v for n, v in headers if n == b"host"), None)
        target = upgrade.target
        if target[:1] != b"/" and b"://" in target:
            target = b"/" + target.partition(b"://")[2].partition(b"/")[2]
        length = next((v for n, v in headers if n == b"content-length"), None)
        request = Request(
            method=upgrade.method,
            scheme=b"http",
            path=target,
            authority=authority,
            protocol=None,
            headers=headers,
            content_length=int(length) if length is not None and length.isdigit() else None,
        )
        self._begin(RequestReceived(1, request, ended=not upgrade.body))
        stream = self.streams.get(1)
        if upgrade.body and stream is not None and stream.cycle is not None:
            stream.cycle.feed_body(upgrade.body)
            stream.cycle.body_done()
        self._flush()
        if upgrade.rest:
            self.data_received(upgrade.rest)

    # -- shutdown, timers ------------------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY with the last stream we will process (§6.8); the
        streams in flight finish, then the connection closes."""
        if self._closed or self._goaway:
            return
        self._goaway = True
        self.core.goaway()
        for stream in list(self.streams.values()):
            if stream.ws is not None:
                stream.ws.shutdown()  # close 1012, as over HTTP/1.1
        self._flush()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.streams:
            return
        self._idle_since = self.loop.time()
        if self._goaway and not self._closed:
            self._flush()
            self._close()

    def _arm(self) -> None:
        interval = self._interval()
        if interval is not None and not self._closed:
            self._timer = self.loop.call_later(interval, self._on_timer)

    def _interval(self) -> float | None:
        ping = self.settings.ping_interval
        idle = self.ctx.limits.keep_alive
        if ping is None:
            return idle
        return ping if idle is None else min(ping, idle)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = self.loop.time()
        if self.streams:
            self._idle_since = now
        keep_alive = self.ctx.limits.keep_alive
        if keep_alive is not None and not self.streams and now - self._idle_since >= keep_alive:
            self.shutdown()  # idle: GOAWAY NO_ERROR, then close
            return
        ping = self.settings.ping_interval
        if ping is not None and now - self._last_read >= ping:
            if self._ping_out:
                self._close()  # the previous PING went unanswered: the peer is gone
                return
            self._ping_out = True
            self.core.ping(b"palfrey!")
            self._flush()
        self._arm()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in list(self.streams.values()):
            stream.close()
        transport = self.transport
        if not transport.can_write_eof():
            transport.close()  # TLS: close_notify, then the transport's own tear-down
            return
        # Half-close so the GOAWAY already written reaches the peer: closing with unread
        # bytes in the receive buffer makes the kernel answer with RST, which can destroy
        # that GOAWAY before the client reads it (RFC 9113 §6.8 asks that it be seen).
        # data_received discards what still arrives; the peer's FIN (eof_received) or
        # LINGER seconds end it.
        transport.write_eof()
        self.loop.call_later(LINGER, transport.close)

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.abort()
