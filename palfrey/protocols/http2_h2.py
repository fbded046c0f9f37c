"""HTTP/2 connections on the h2 library (RFC 9113).

One `H2Connection` per TCP connection; one `H2Stream` per request stream. A stream is an
`HTTPChannel`: the request/response semantics are the shared `HTTPCycle`'s, each stream's
cycle runs as its own task, and this module only maps them onto frames.

Flow control (RFC 9113 §5.2, §6.9). Inbound: each stream's window is returned with
WINDOW_UPDATE as the app consumes its body (at half a window, so a client is never left
without credit while the app waits); the connection window is kept large and topped up,
so one slow reader cannot stall the other streams (each stream's window bounds what it
can buffer). Outbound: a stream sends what both the stream and the connection windows
allow; the rest waits for WINDOW_UPDATE, and the app's `send` waits (`write_paused`)
until the stream's buffer has drained and the transport accepts writes again.

Where h2 differs from RFC 9113 the `_ServerConnection` subclass corrects it: an HPACK
failure is a COMPRESSION_ERROR (§4.3), a stream over the concurrency limit or above a
GOAWAY is refused with REFUSED_STREAM (§5.1.2, §6.8), a malformed request (bad
content-length, §8.1.1) is a stream error, a GOAWAY we send for a graceful shutdown lets
in-flight streams finish (§6.8), and CONTINUATION floods are bounded (§10.5).

Output is batched: everything h2 has queued goes to the transport in one write per data
received or per loop turn, whichever comes first, however many streams wrote.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from h2.errors import ErrorCodes
from h2.frame_buffer import CONTINUATION_BACKLOG, FrameBuffer
from hpack.exceptions import HPACKError
from hyperframe.frame import ContinuationFrame, Frame, GoAwayFrame, RstStreamFrame

from palfrey.asgi.http_cycle import HTTPCycle
from palfrey.protocols.context import http_scope
from palfrey.protocols.fields import Request as _Request
from palfrey.protocols.fields import lower_fields as _lower_fields
from palfrey.protocols.fields import parse_request as _request
from palfrey.protocols.fields import response_fields
from palfrey.protocols.fields import subprotocols as _subprotocols
from palfrey.protocols.http11_base import LINGER
from palfrey.protocols.settings import HTTP2Settings
from palfrey.transports.asyncio_stream import addresses, set_nodelay, tls_extension

if TYPE_CHECKING:
    from palfrey.asgi.types import Receive, Scope, Send
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.settings import WebSocketSettings

__all__ = ["PREFACE", "H2Connection", "Upgrade"]


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface (RFC 9113 §3.4)."""

_CONN_WINDOW = 1 << 24  # the connection-level receive window kept open (§6.9.1)
_FLOOD_PERIOD = 10.0  # seconds over which the flood budgets refill
_FILE_CHUNK = 65536
_EMPTY = memoryview(b"")


@dataclass
class Upgrade:
    """An HTTP/1.1 request that asked for `Upgrade: h2c` (RFC 7540 §3.2): it becomes
    stream 1 of the new connection, its body already read in full."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    settings: bytes  # the HTTP2-Settings field value
    rest: bytes = b""  # what followed the request (the client preface and frames)


class _CompressionError(h2.exceptions.ProtocolError):
    error_code = ErrorCodes.COMPRESSION_ERROR


class _FrameBuffer(FrameBuffer):
    """h2's frame buffer, with a byte bound on a header block split over CONTINUATION
    frames (RFC 9113 §10.5: a CONTINUATION flood is answered with ENHANCE_YOUR_CALM)."""

    def __init__(self, block_limit: int) -> None:
        super().__init__(server=True)
        self.block_limit = block_limit
        self.settings_seen = False
        self.zero_update = False

    def _validate_frame_length(self, length: int) -> None:
        # Checks hyperframe does not make, or makes with the wrong error code. The frame
        # header is at the start of `_data` and the whole frame has arrived.
        super()._validate_frame_length(length)
        data = self._data
        kind = data[3]
        if not self.settings_seen:
            # §3.4: the client preface ends with a SETTINGS frame (not an ACK).
            if kind != 0x4 or data[4] & 0x1:
                raise h2.exceptions.ProtocolError("the first frame must be SETTINGS")
            self.settings_seen = True
        if kind == 0x4 and data[4] & 0x1 and length:
            # §6.5: a SETTINGS ACK with a payload is a FRAME_SIZE_ERROR.
            raise h2.exceptions.FrameDataMissingError("SETTINGS ACK with a payload")
        if (
            kind == 0x8
            and length == 4
            and data[5:9] != b"\0\0\0\0"
            and not (data[9] & 0x7F or data[10] or data[11] or data[12])
        ):
            # §6.9: a zero increment on a stream is a stream error, but hyperframe
            # refuses to parse it at all; it goes on as an increment of 1, flagged.
            data[12] = 1
            self.zero_update = True

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        pending = self._headers_buffer
        if pending and isinstance(f, ContinuationFrame) and pending[0].stream_id == f.stream_id:
            size = len(f.data) + sum(len(x.data) for x in pending)
            if size > self.block_limit or len(pending) >= CONTINUATION_BACKLOG:
                raise h2.exceptions.DenialOfServiceError("CONTINUATION flood")
        return super()._update_header_buffer(f)


class _ServerConnection(h2.connection.H2Connection):
    """h2's connection with the RFC 9113 corrections listed in the module docstring."""

    def __init__(self, config: h2.config.H2Configuration, block_limit: int) -> None:
        super().__init__(config)
        self.incoming_buffer: _FrameBuffer = _FrameBuffer(block_limit)
        #: After our GOAWAY (§6.8) new streams above this id are refused.
        self.refuse_above = (1 << 31) - 1

    def _receive_frame(self, frame: Frame) -> Any:
        # h2's own, less its `logger.trace("Received frame: %s", repr(frame))`: the repr
        # is built for every frame even with logging off (2% of the CPU per request).
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as exc:
            # A stream closed by RST_STREAM is a stream error; otherwise a connection one.
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            rst = RstStreamFrame(exc.stream_id)
            rst.error_code = exc.error_code
            self._prepare_for_sending([rst])
            events = exc._events
        except h2.exceptions.StreamIDTooLowError as exc:
            if self._stream_is_closed_by_reset(exc.stream_id):
                rst = RstStreamFrame(exc.stream_id)
                rst.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([rst])
                events = []
            elif self._stream_is_closed_by_end(exc.stream_id):
                raise h2.exceptions.StreamClosedError(exc.stream_id) from exc
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _receive_headers_frame(self, frame: Any) -> Any:
        sid = frame.stream_id
        streams = self.streams
        if sid not in streams and sid & 1 and sid > self.highest_inbound_stream_id:
            limit = self.local_settings.max_concurrent_streams
            # `open_inbound_streams` walks every stream: only when the limit is near.
            if sid > self.refuse_above or (
                len(streams) >= limit and self.open_inbound_streams >= limit
            ):
                return self._refuse(frame)
        try:
            return super()._receive_headers_frame(frame)
        except (h2.exceptions.NoSuchStreamError, h2.exceptions.DenialOfServiceError):
            raise
        except h2.exceptions.ProtocolError as exc:
            if isinstance(exc.__cause__, (HPACKError, IndexError, UnicodeDecodeError)):
                raise _CompressionError(str(exc)) from exc  # §4.3
            stream = self.streams.get(sid)
            if type(exc) is h2.exceptions.ProtocolError and stream is not None:
                # §8.1.1: a malformed request (bad content-length, HEADERS in the middle
                # of a body) is a stream error of type PROTOCOL_ERROR.
                return self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            raise

    def _receive_data_frame(self, frame: Any) -> Any:
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            # §8.1.1: DATA that disagrees with content-length makes the request malformed.
            return self._reset(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)

    def _receive_window_update_frame(self, frame: Any) -> Any:
        buffer = self.incoming_buffer
        if buffer.zero_update:
            buffer.zero_update = False
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                if frame.stream_id > self.highest_inbound_stream_id:
                    raise h2.exceptions.ProtocolError("WINDOW_UPDATE on an idle stream")
                return [], []
            return self._reset(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)
        return super()._receive_window_update_frame(frame)

    def _refuse(self, frame: Any) -> Any:
        # §4.3: the header block is decoded anyway to keep the HPACK context in step;
        # §5.1.2 / §8.7: REFUSED_STREAM tells the client the request was not processed.
        h2.connection._decode_headers(self.decoder, frame.data)
        self.highest_inbound_stream_id = frame.stream_id
        self._closed_streams[frame.stream_id] = h2.stream.StreamClosedBy.SEND_RST_STREAM
        rst = RstStreamFrame(frame.stream_id)
        rst.error_code = ErrorCodes.REFUSED_STREAM
        return [rst], []

    def _reset(self, stream_id: int, code: ErrorCodes) -> Any:
        stream = self.streams[stream_id]
        frames = stream.reset_stream(code)
        try:
            event = h2.events.StreamReset(stream_id=stream_id, error_code=code, remote_reset=False)
        except TypeError:  # pragma: no cover - h2 < 4.2 events take no arguments
            event = h2.events.StreamReset()  # type: ignore[call-arg,unused-ignore]
            event.stream_id, event.error_code, event.remote_reset = stream_id, code, False
        return frames, [event]

    def send_goaway(self, last_stream_id: int, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """GOAWAY without closing h2's state machine: streams up to `last_stream_id`
        go on (§6.8); later ones are refused."""
        self.refuse_above = min(self.refuse_above, last_stream_id)
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = code
        self._prepare_for_sending([frame])


class _Budget:
    """A token bucket: `limit` events at once, refilled over `_FLOOD_PERIOD` seconds."""

    __slots__ = ("limit", "rate", "stamp", "tokens")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = float(limit)
        self.rate = limit / _FLOOD_PERIOD
        self.tokens = float(limit)
        self.stamp = now

    def spend(self, now: float) -> bool:
        """Take one token; False when the budget is exhausted."""
        self.tokens = min(self.limit, self.tokens + (now - self.stamp) * self.rate) - 1
        self.stamp = now
        return self.tokens >= 0


async def _service_unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": b"Service Unavailable"})


def _plain(status: int, text: bytes) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text})

    return app


class H2Stream:
    """One request stream: the HTTPChannel its HTTPCycle writes to."""

    __slots__ = (
        "_buf",
        "_drain",
        "_end",
        "_fields",
        "_trailers",
        "_want_trailers",
        "acked",
        "body_allowed",
        "closed",
        "conn",
        "cycle",
        "ended",
        "received",
        "remote_ended",
        "stream_id",
        "write_paused",
        "ws",
    )

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.cycle: HTTPCycle | None = None
        self.write_paused = conn.write_blocked
        self.closed = False  # reset, or the connection is gone
        self.ended = False  # END_STREAM sent
        self.body_allowed = True
        self.remote_ended = False  # the client's END_STREAM has arrived
        self.ws: _H2WebSocket | None = None  # RFC 8441: the stream carries a WebSocket
        self.received = 0  # flow-controlled request bytes (padding included)
        self.acked = 0  # of which returned to the client with WINDOW_UPDATE
        self._buf = _EMPTY  # response bytes waiting for flow-control credit
        self._end = False  # END_STREAM once _buf is sent
        self._want_trailers = False  # the app announced trailers: they end the stream
        self._fields: list[tuple[bytes, bytes]] = []  # trailer fields so far
        self._trailers: list[tuple[bytes, bytes]] | None = None  # all trailer fields
        self._drain: asyncio.Future[None] | None = None

    # -- HTTPChannel ---------------------------------------------------------------

    def write_response(
        self, cycle: HTTPCycle, status: int, headers: Any, body: bytes, more_body: bool
    ) -> None:
        if self.closed:
            return
        conn = self.conn
        method = cycle.scope["method"]
        self.body_allowed = method != "HEAD" and status not in (204, 304)
        fields = conn.response_fields(status, headers)
        self._want_trailers = cycle.trailers
        if not self.body_allowed:
            body = b""
        end = not more_body and not body and not cycle.trailers
        conn.h2.send_headers(self.stream_id, fields, end_stream=end)
        if end:
            self._ended(cycle)
        elif body or not more_body:
            self._queue(cycle, body, more_body)
        conn.want_flush()

    def write_body(self, cycle: HTTPCycle, body: bytes, more_body: bool) -> None:
        if self.closed:
            return
        if self._end or self.ended:
            raise RuntimeError("Response body sent after the response ended")
        if not self.body_allowed:
            body = b""
        if body or not more_body:
            self._queue(cycle, body, more_body)
            self.conn.want_flush()

    def write_trailers(self, cycle: HTTPCycle, headers: Any, more_trailers: bool) -> None:
        """`http.response.trailers`: a HEADERS frame that ends the stream (§8.1)."""
        if self.closed or self.ended:
            return
        self._fields.extend(_lower_fields(headers))
        if more_trailers:
            return
        self._trailers = self._fields
        self._end = True
        if not cycle.complete:
            cycle.finish()
            self.conn.request_done(self)
        self._push()
        self.conn.want_flush()

    def write_early_hint(self, cycle: HTTPCycle, links: Iterable[bytes]) -> None:
        """`http.response.early_hint`: a 103 informational response (RFC 8297)."""
        if self.closed:
            return
        fields = [(b":status", b"103")] + [(b"link", bytes(link)) for link in links]
        self.conn.h2.send_headers(self.stream_id, fields)
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
        if unacked >= self.conn.settings.initial_window_size >> 1 and cycle.more_body:
            self.acked += unacked
            self.conn.open_window(self.stream_id, unacked)

    def send_continue(self, cycle: HTTPCycle) -> None:
        """HTTP/2 needs no `100 Continue`: flow control already paces the body."""

    def app_failed(self, cycle: HTTPCycle) -> None:
        # §8.1: a response that cannot be completed ends with RST_STREAM.
        self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)

    def app_finished(self, cycle: HTTPCycle) -> None:
        if not cycle.complete and not self.closed:
            self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)
        # The cycle is done with this stream: dropping it breaks the stream <-> cycle
        # reference cycle, so a request's objects (scope, task, buffers) are freed by
        # reference counting at once instead of by the cyclic GC (a tenth of the CPU
        # under load when they were left to it).
        self.cycle = None
        self.conn.stream_finished(self)

    # -- sending -------------------------------------------------------------------

    def send_raw(self, data: bytes, end: bool) -> None:
        """DATA for a non-HTTP use of the stream (RFC 8441 WebSocket frames)."""
        if self.closed or self.ended or self._end:
            return
        self._buf = memoryview(bytes(self._buf) + data) if self._buf else memoryview(data)
        self._end = end
        self._push()
        self.conn.want_flush()

    def _queue(self, cycle: HTTPCycle, body: bytes, more_body: bool) -> None:
        if self._buf:
            self._buf = memoryview(bytes(self._buf) + body)
        else:
            self._buf = memoryview(body)
        if not more_body:
            self._end = not self._want_trailers
            if not self._want_trailers:
                cycle.finish()
                self.conn.request_done(self)
        self._push()

    def _push(self) -> None:
        """Send what the windows allow; END_STREAM or trailers once all is sent."""
        conn = self.conn
        h2conn = conn.h2
        sid = self.stream_id
        buf = self._buf
        while buf:
            window = min(h2conn.local_flow_control_window(sid), h2conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk, buf = buf[:window], buf[window:]
            last = not buf and self._end and not self._want_trailers
            h2conn.send_data(sid, chunk.tobytes(), end_stream=last)
            if last:
                self._buf = buf
                self._ended(self.cycle)
                return
        self._buf = buf
        if buf:
            conn.blocked[sid] = self
            self.write_paused = True
            return
        conn.blocked.pop(sid, None)
        if self._end:
            if self._want_trailers:
                h2conn.send_headers(sid, self._trailers or [], end_stream=True)
            else:
                h2conn.end_stream(sid)
            self._ended(self.cycle)
            return
        if self.write_paused and not conn.write_blocked:
            self.write_paused = False
            self.wake()

    def _ended(self, cycle: HTTPCycle | None) -> None:
        self.ended = True
        self.write_paused = False
        self.wake()
        if cycle is not None and not cycle.complete:
            cycle.finish()
            self.conn.request_done(self)
        self.conn.stream_ended(self)

    def wake(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """The stream is gone (reset or connection lost): wake and release the app."""
        self.closed = True
        self._buf = _EMPTY
        self.write_paused = False
        self.wake()
        if self.cycle is not None and not self.cycle.complete:
            self.cycle.disconnect()
        if self.ws is not None:
            self.ws.lost()


class H2Connection(asyncio.Protocol):
    """An HTTP/2 connection: frames in and out through h2, one HTTPCycle per stream."""

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
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Request fields are checked here (`_request`) so that a malformed request is
            # a stream error (§8.1.1), not h2's connection error; responses are built
            # lower-case from the app's fields, without connection-specific ones.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        block_limit = settings.max_header_list_size + settings.max_frame_size
        self.h2 = _ServerConnection(config, block_limit)
        self.streams: dict[int, H2Stream] = {}
        self.blocked: dict[int, H2Stream] = {}  # streams waiting for window credit
        self.write_blocked = False  # the transport asked us to pause writing
        self.upgrade = upgrade
        self.websocket = websocket
        self.server: Any = None
        self.client: Any = None
        self.scheme = "http"
        self.extensions: dict[str, Any] = {}
        self._closed = False
        self._goaway = False
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._last_read = 0.0
        self._ping_out = False
        now = self.loop.time()
        self._resets = _Budget(settings.max_client_resets, now)
        self._control = _Budget(settings.max_control_frames, now)

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
        tls = tls_extension(transport)
        if tls is not None:
            self.scheme = "https"
            self.extensions["tls"] = tls
        self._start()
        if self.ctx.state.shutting_down:
            self.shutdown()
        self._idle_since = self._last_read = self.loop.time()
        self._arm()

    def _start(self) -> None:
        conn = self.h2
        s = self.settings
        codes = h2.settings.SettingCodes
        values = {
            codes.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
            codes.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
            codes.MAX_FRAME_SIZE: s.max_frame_size,
            codes.ENABLE_PUSH: 0,
        }
        if s.connect_protocol:
            values[codes.ENABLE_CONNECT_PROTOCOL] = 1
        if s.initial_window_size > 65535:
            # Larger than the default: safe to apply before the client acknowledges.
            values[codes.INITIAL_WINDOW_SIZE] = s.initial_window_size
        conn.local_settings = h2.settings.Settings(client=False, initial_values=values)
        conn.max_inbound_frame_size = s.max_frame_size
        conn.decoder.max_header_list_size = s.max_header_list_size
        upgrade = self.upgrade
        if upgrade is None:
            conn.initiate_connection()
        else:
            conn.initiate_upgrade_connection(upgrade.settings)
        if s.initial_window_size < 65535:
            # Smaller: h2 applies it once the client acknowledges (§6.5.3).
            conn.update_settings({codes.INITIAL_WINDOW_SIZE: s.initial_window_size})
        conn.increment_flow_control_window(_CONN_WINDOW - 65535)
        self._flush()
        if upgrade is not None:
            self.upgrade = None
            self._upgraded_request(upgrade)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.state.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in list(self.streams.values()):
            stream.close()
        self.streams.clear()
        self.blocked.clear()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_read = self.loop.time()
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 has queued GOAWAY with the error code (§5.4.1); nothing else follows.
            self._flush()
            self._close()
            return
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)
                if self._closed:
                    return
        if self.h2.inbound_flow_control_window < _CONN_WINDOW >> 1:
            self.h2.increment_flow_control_window(
                _CONN_WINDOW - self.h2.inbound_flow_control_window
            )
        self._flush()

    def pause_writing(self) -> None:
        self.write_blocked = True
        for stream in self.streams.values():
            stream.write_paused = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        for stream in self.streams.values():
            if not stream._buf:
                stream.write_paused = False
                stream.wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- frame events --------------------------------------------------------------------

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        request = _request(event.headers, self.settings.connect_protocol)
        if request is None:
            self._reset_id(sid, ErrorCodes.PROTOCOL_ERROR)  # §8.1.1 malformed
            return
        self._begin(sid, request, event.stream_ended is not None)

    def _begin(self, sid: int, request: _Request, ended: bool) -> None:
        ctx = self.ctx
        stream = H2Stream(self, sid)
        stream.remote_ended = ended
        self.streams[sid] = stream
        scope = self._scope(request)
        if request.protocol is not None:
            self._websocket(stream, scope, request)
            return
        app = ctx.app
        length = request.content_length
        limit = ctx.limits.max_body_size
        if request.method == b"CONNECT":
            app = _plain(405, b"CONNECT is not supported")  # RFC 9110 §9.3.6
        elif limit is not None and length is not None and length > limit:
            app = _plain(413, b"Request body too large")
        elif ctx.concurrency is not None and len(ctx.state.cycles) >= ctx.concurrency:
            app = _service_unavailable
        cycle = HTTPCycle(scope, stream, ctx, more_body=not ended)
        stream.cycle = cycle
        self._run(cycle, app)

    def _run(self, cycle: HTTPCycle, app: Any) -> None:
        cycle.start(app, self.loop)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        data = event.data
        stream = self.streams.get(sid)
        if not data and event.stream_ended is None and not self._control.spend(self.loop.time()):
            self._calm()  # empty DATA frames are a flood vector (CVE-2019-9518)
            return
        if stream is None:
            return
        if event.stream_ended is not None:
            stream.remote_ended = True
        if stream.ws is not None:
            stream.ws.data(data, event.flow_controlled_length)
            return
        cycle = stream.cycle
        if cycle is None:
            return
        stream.received += event.flow_controlled_length
        padding = event.flow_controlled_length - len(data)
        if padding:
            # §6.1: padding is flow-controlled but never reaches the app.
            stream.acked += padding
            self.open_window(sid, padding)
        if data:
            limit = self.ctx.limits.max_body_size
            if limit is not None and cycle.body_received + len(data) > limit:
                self._too_large(stream, cycle)
                return
            cycle.feed_body(data)
        if event.stream_ended is not None:
            cycle.body_done()

    def _too_large(self, stream: H2Stream, cycle: HTTPCycle) -> None:
        if not cycle.started:
            cycle.started = True
            cycle.status = 413
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            stream.write_response(cycle, 413, headers, b"Request body too large", False)
        self.reset(stream, ErrorCodes.CANCEL if not stream.ended else ErrorCodes.NO_ERROR)

    def _on_end(self, event: h2.events.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        stream.remote_ended = True
        if stream.cycle is not None:
            stream.cycle.body_done()
        elif stream.ws is not None:
            stream.ws.remote_end()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        self.blocked.pop(event.stream_id, None)
        if stream is not None:
            stream.close()
        if event.remote_reset and not self._resets.spend(self.loop.time()):
            self._calm()  # rapid reset, CVE-2023-44487
        self._maybe_done()

    def _on_window(self, event: h2.events.WindowUpdated) -> None:
        if event.stream_id:
            stream = self.blocked.get(event.stream_id)
            if stream is not None:
                stream._push()
        else:
            self._unblock()

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        if not self._control.spend(self.loop.time()):
            self._calm()
            return
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._unblock()

    def _on_control(self, event: Any) -> None:
        if not self._control.spend(self.loop.time()):
            self._calm()

    def _on_ping_ack(self, event: h2.events.PingAckReceived) -> None:
        self._ping_out = False

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        # The client is leaving; h2 accepts no more frames in either direction.
        self._flush()
        self._close()

    def _unblock(self) -> None:
        for stream in list(self.blocked.values()):
            stream._push()
            if self.h2.outbound_flow_control_window <= 0:
                break

    # -- what streams call -------------------------------------------------------------

    def response_fields(self, status: int, headers: Any) -> list[tuple[bytes, bytes]]:
        """The response HEADERS: `:status`, the app's fields lower-cased without the
        connection-specific ones (§8.2.2), then the server's defaults."""
        return response_fields(self.ctx.defaults, status, headers)

    def open_window(self, stream_id: int, size: int) -> None:
        try:
            self.h2.increment_flow_control_window(size, stream_id=stream_id)
        except h2.exceptions.H2Error:
            return  # the stream has closed meanwhile
        self.want_flush()

    def request_done(self, stream: H2Stream) -> None:
        ctx = self.ctx
        ctx.state.count_request()
        cycle = stream.cycle
        if ctx.access_log is not None and cycle is not None:
            elapsed = self.loop.time() - cycle.start_time
            ctx.access_log(cycle.scope, cycle.status, cycle.bytes_sent, elapsed)

    def stream_ended(self, stream: H2Stream) -> None:
        """END_STREAM has been sent."""
        self.blocked.pop(stream.stream_id, None)
        if not stream.remote_ended and not stream.closed:
            # §8.1: the response is complete before the request: stop the upload.
            self.reset(stream, ErrorCodes.NO_ERROR)
            return
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        self._maybe_done()

    def stream_finished(self, stream: H2Stream) -> None:
        """The stream's app has returned."""
        self._maybe_done()

    def reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        self.streams.pop(stream.stream_id, None)
        self.blocked.pop(stream.stream_id, None)
        if not stream.closed and not self._closed:
            stream.close()
            self._reset_id(stream.stream_id, code)
        self._maybe_done()

    def _reset_id(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            return
        self.want_flush()

    def want_flush(self) -> None:
        if self._flush_handle is None and not self._closed:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        if self._closed:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    # -- the scope ---------------------------------------------------------------------

    def _scope(self, request: _Request) -> Scope:
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
            request.headers,
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
        request = _Request(
            method=upgrade.method,
            scheme=b"http",
            path=target,
            authority=authority,
            protocol=None,
            headers=headers,
            content_length=int(length) if length is not None and length.isdigit() else None,
        )
        self._begin(1, request, ended=not upgrade.body)
        stream = self.streams.get(1)
        if upgrade.body and stream is not None and stream.cycle is not None:
            stream.cycle.feed_body(upgrade.body)
            stream.cycle.body_done()
        if upgrade.rest:
            self.data_received(upgrade.rest)

    def _websocket(self, stream: H2Stream, scope: Scope, request: _Request) -> None:
        """RFC 8441 §4: an extended CONNECT with `:protocol: websocket`."""
        settings = self.websocket
        version = next((v for n, v in request.headers if n == b"sec-websocket-version"), None)
        problem = None
        if settings is None or request.protocol != b"websocket":
            problem = _plain(501, b"Unsupported :protocol")
        elif version != b"13":
            problem = _plain(400, b"Unsupported Sec-WebSocket-Version")  # RFC 6455 §4.2.1
        if problem is not None:
            cycle = HTTPCycle(scope, stream, self.ctx, more_body=not stream.remote_ended)
            stream.cycle = cycle
            self._run(cycle, problem)
            return
        assert settings is not None
        from palfrey.protocols.websocket_endpoint import scope_extensions

        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        scope["subprotocols"] = _subprotocols(request.headers)
        scope["extensions"] = scope_extensions(self.extensions)
        del scope["method"]
        offers = [v for n, v in request.headers if n == b"sec-websocket-extensions"]
        endpoint = stream.ws = _H2WebSocket(self.ctx, settings, stream)
        endpoint.start(scope, offers)

    # -- shutdown, timers, floods --------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY with the last stream we will process (§6.8); the
        streams in flight finish, then the connection closes."""
        if self._closed or self._goaway:
            return
        self._goaway = True
        self.h2.send_goaway(self.h2.highest_inbound_stream_id)
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

    def _calm(self) -> None:
        """A flood: GOAWAY ENHANCE_YOUR_CALM (§5.4.1, §10.5) and close."""
        if self._closed:
            return
        self.h2.send_goaway(self.h2.highest_inbound_stream_id, ErrorCodes.ENHANCE_YOUR_CALM)
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
            self.h2.ping(b"palfrey!")
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


def _websocket_endpoint() -> type:
    from palfrey.protocols.websocket_endpoint import WebSocketEndpoint

    return WebSocketEndpoint


if TYPE_CHECKING:
    from palfrey.protocols.websocket_endpoint import WebSocketEndpoint as _Endpoint
else:
    try:
        _Endpoint = _websocket_endpoint()
    except ImportError:  # pragma: no cover - WebSockets not available
        _Endpoint = object


class _H2WebSocket(_Endpoint):  # type: ignore[misc,valid-type,unused-ignore]
    """A WebSocket over one HTTP/2 stream (RFC 8441): the shared endpoint and session,
    with frames carried in DATA, the handshake answered with HEADERS 200 (§5), END_STREAM
    for a TCP FIN and RST_STREAM for an abort."""

    def __init__(self, ctx: ConnectionContext, settings: WebSocketSettings, stream: H2Stream):
        super().__init__(ctx, settings)
        self.stream = stream
        self._read_paused = False

    @property  # type: ignore[override,unused-ignore]
    def write_paused(self) -> bool:
        return self.stream.write_paused

    @write_paused.setter
    def write_paused(self, value: bool) -> None:
        pass  # the stream's flow control decides

    async def drain(self) -> None:
        await self.stream.drain()

    def data(self, data: bytes, flow_controlled: int) -> None:
        stream = self.stream
        stream.received += flow_controlled
        self._credit()
        if data:
            self.feed(data)

    def remote_end(self) -> None:
        if self.phase != 3:  # the peer left without a closing handshake
            self.lost()

    def _credit(self) -> None:
        # §6.9: credit is returned while the session is reading (its queue bounds it).
        stream = self.stream
        unacked = stream.received - stream.acked
        if not self._read_paused and unacked >= stream.conn.settings.initial_window_size >> 1:
            stream.acked += unacked
            stream.conn.open_window(stream.stream_id, unacked)

    def _write(self, data: bytes) -> None:
        self.stream.send_raw(data, False)

    def _write_accept(
        self, subprotocol: str | None, headers: list[tuple[bytes, bytes]], extension: bytes | None
    ) -> None:
        fields = list(headers)
        if subprotocol is not None:
            fields.append((b"sec-websocket-protocol", subprotocol.encode()))
        if extension is not None:
            fields.append((b"sec-websocket-extensions", extension))
        stream = self.stream
        conn = stream.conn
        if not stream.closed:
            conn.h2.send_headers(stream.stream_id, conn.response_fields(200, fields))
            conn.want_flush()

    def _write_response(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        stream = self.stream
        conn = stream.conn
        if stream.closed:
            return
        conn.h2.send_headers(stream.stream_id, conn.response_fields(status, headers))
        stream.send_raw(body, True)

    def _end(self) -> None:
        self.stream.send_raw(b"", True)

    def _abort(self) -> None:
        stream = self.stream
        stream.conn.reset(stream, ErrorCodes.CANCEL)

    def _pause(self) -> None:
        self._read_paused = True

    def _resume(self) -> None:
        self._read_paused = False
        self._credit()

    def _forget(self) -> None:
        stream = self.stream
        stream.conn.streams.pop(stream.stream_id, None)
        stream.conn.stream_finished(stream)


_HANDLERS: dict[type, Callable[[H2Connection, Any], None]] = {
    h2.events.RequestReceived: H2Connection._on_request,
    h2.events.DataReceived: H2Connection._on_data,
    h2.events.StreamEnded: H2Connection._on_end,
    h2.events.StreamReset: H2Connection._on_reset,
    h2.events.WindowUpdated: H2Connection._on_window,
    h2.events.RemoteSettingsChanged: H2Connection._on_settings,
    h2.events.PingReceived: H2Connection._on_control,
    h2.events.PriorityUpdated: H2Connection._on_control,
    h2.events.PingAckReceived: H2Connection._on_ping_ack,
    h2.events.ConnectionTerminated: H2Connection._on_goaway,
}

_UPGRADE_FIELDS = frozenset((b"connection", b"upgrade", b"http2-settings", b"keep-alive"))


def decode_settings(value: bytes) -> bool:
    """Whether an HTTP2-Settings field is valid base64url of whole settings (RFC 7540
    §3.2.1): checked before answering 101, so a bad one leaves the request on HTTP/1.1."""
    try:
        raw = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except ValueError:
        return False
    return len(raw) % 6 == 0
