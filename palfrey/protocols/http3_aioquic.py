"""HTTP/3 on aioquic (RFC 9114): request streams of QUIC connections as HTTPChannels.

`H3Session` is one QUIC connection (palfrey.transports.quic_aioquic feeds it datagrams)
with aioquic's H3Connection on top; each request stream is an `H3Stream`, the
`HTTPChannel` its `HTTPCycle` writes to, exactly as an HTTP/2 stream is. Requests are
checked with the rules HTTP/2 uses (palfrey.protocols.http2_fields; RFC 9114 §4.2-4.3),
and a malformed one is a stream error H3_MESSAGE_ERROR (§4.1.2), not the connection
error aioquic would make it; responses are built by palfrey.protocols.http3_fields.

Flow control (RFC 9000 §4). Inbound: a stream's credit is returned as the app consumes
its body (ServerQuic._write_stream_limits), so a slow app slows its client. Outbound:
aioquic buffers what a stream writes until the client acknowledges it; past
`_HIGH_WATER` unacknowledged bytes the app's `send` waits (`write_paused`) until
acknowledgements bring it under `_LOW_WATER`.

Shutdown (§5.2): a first GOAWAY stops new requests, a second names the first stream not
processed; the streams in flight finish, then the connection closes with H3_NO_ERROR once
the client has acknowledged the last responses.

WebSocket over HTTP/3 (RFC 9220): palfrey.protocols.http3_websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pylsqpack
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, MessageError, Setting
from aioquic.h3.connection import H3Stream as _AioH3Stream
from aioquic.h3.connection import encode_frame as _encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events

from palfrey.asgi.http_cycle import HTTPCycle
from palfrey.protocols.context import http_scope
from palfrey.protocols.http2_fields import Request, parse_request, plain_fields
from palfrey.protocols.http3_fields import plain_response, response_fields
from palfrey.transports.quic_aioquic import (
    QuicEndpoint,
    QuicSession,
    ServerQuic,
    Steering,
    TicketStore,
)

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration

    from palfrey.asgi.types import Scope
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.http3_websocket import H3WebSocket
    from palfrey.protocols.settings import HTTP3Settings

__all__ = ["H3Session", "H3Stream", "endpoint"]

_HIGH_WATER = 262144  # unacknowledged response bytes of a stream before `send` waits
_LOW_WATER = 65536  # ... and under which it goes on
_FILE_CHUNK = 65536
_FIELD_OVERHEAD = 32  # RFC 9114 §4.2.2: each field counts 32 bytes beside its name and value
_FLOOD_PERIOD = 10.0
_NO_CREDIT = 1 << 62
_CLOSE_GRACE = 1.0  # between the two GOAWAYs: requests already on their way get in
_MAX_STREAM_ID = (1 << 62) - 4  # the largest client-initiated bidirectional stream id


class _ServerH3(H3Connection):
    """aioquic's H3Connection with Palfrey's QPACK limits and field-section bound in its
    SETTINGS, and malformed requests as stream errors (RFC 9114 §4.1.2)."""

    def __init__(
        self, quic: ServerQuic, settings: HTTP3Settings, reject: Callable[[int], None]
    ) -> None:
        self._palfrey = settings
        self._reject = reject
        self.rejected: set[int] = set()
        super().__init__(quic)

    def _init_connection(self) -> None:
        settings = self._palfrey
        self._max_table_capacity = settings.qpack_max_table_capacity
        self._blocked_streams = settings.qpack_blocked_streams
        self._decoder = pylsqpack.Decoder(self._max_table_capacity, self._blocked_streams)
        super()._init_connection()

    def _get_local_settings(self) -> dict[int, int]:
        values: dict[int, int] = super()._get_local_settings()
        values[Setting.MAX_FIELD_SECTION_SIZE] = self._palfrey.max_field_section_size
        if not self._palfrey.connect_protocol:
            values.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        return values

    def _receive_request_or_push_data(
        self, stream: _AioH3Stream, data: bytes, stream_ended: bool
    ) -> list[Any]:
        sid = stream.stream_id
        if sid in self.rejected:
            return []
        try:
            result: list[Any] = super()._receive_request_or_push_data(stream, data, stream_ended)
        except MessageError:
            # §4.1.2: a malformed request is a stream error H3_MESSAGE_ERROR.
            self.rejected.add(sid)
            stream.buffer = b""
            stream.sending_ended = stream.receiving_ended = True
            self._reject(sid)
            return []
        return result

    def send_goaway(self, stream_id: int) -> None:
        """GOAWAY on the control stream (§5.2, §7.2.6): requests on `stream_id` and
        above will not be processed."""
        control = self._local_control_stream_id
        if control is not None:
            frame = _encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id))
            self._quic.send_stream_data(control, frame)


class _Budget:
    """A token bucket: `limit` events at once, refilled over `_FLOOD_PERIOD` seconds."""

    __slots__ = ("limit", "rate", "stamp", "tokens")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = float(limit)
        self.rate = limit / _FLOOD_PERIOD
        self.tokens = float(limit)
        self.stamp = now

    def spend(self, now: float) -> bool:
        self.tokens = min(self.limit, self.tokens + (now - self.stamp) * self.rate) - 1
        self.stamp = now
        return self.tokens >= 0


class H3Stream:
    """One request stream: the HTTPChannel its HTTPCycle writes to."""

    __slots__ = (
        "_drain",
        "_fields",
        "body_allowed",
        "closed",
        "cycle",
        "ended",
        "remote_ended",
        "session",
        "stream_id",
        "write_paused",
        "ws",
    )

    def __init__(self, session: H3Session, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.cycle: HTTPCycle | None = None
        self.write_paused = False
        self.closed = False  # reset, or the connection is gone
        self.ended = False  # our FIN is written
        self.remote_ended = False  # the client's FIN has arrived
        self.body_allowed = True
        self.ws: H3WebSocket | None = None
        self._fields: list[tuple[bytes, bytes]] = []  # trailer fields so far
        self._drain: asyncio.Future[None] | None = None

    # -- HTTPChannel -----------------------------------------------------------------------

    def write_response(
        self, cycle: HTTPCycle, status: int, headers: Any, body: bytes, more_body: bool
    ) -> None:
        if self.closed:
            return
        session = self.session
        self.body_allowed = cycle.scope["method"] != "HEAD" and status not in (204, 304)
        fields = response_fields(session.ctx.defaults, status, headers)
        if not self.body_allowed:
            body = b""
        end = not more_body and not body and not cycle.trailers
        session.h3.send_headers(self.stream_id, fields, end_stream=end)
        if end:
            self._ended(cycle)
            session.want_flush()
        elif body or not more_body:
            self._send(cycle, body, more_body)
        else:
            session.want_flush()

    def write_body(self, cycle: HTTPCycle, body: bytes, more_body: bool) -> None:
        if self.closed:
            return
        if self.ended:
            raise RuntimeError("Response body sent after the response ended")
        if not self.body_allowed:
            body = b""
        if body or not more_body:
            self._send(cycle, body, more_body)

    def write_trailers(self, cycle: HTTPCycle, headers: Any, more_trailers: bool) -> None:
        """`http.response.trailers`: a HEADERS frame that ends the stream (§4.1)."""
        if self.closed or self.ended:
            return
        self._fields.extend(plain_fields(headers))
        if more_trailers:
            return
        self.session.h3.send_headers(self.stream_id, self._fields, end_stream=True)
        self._ended(cycle)
        self.session.want_flush()

    def write_early_hint(self, cycle: HTTPCycle, links: Iterable[bytes]) -> None:
        """`http.response.early_hint`: a 103 interim response (RFC 8297)."""
        if self.closed:
            return
        fields = [(b":status", b"103")] + [(b"link", bytes(link)) for link in links]
        self.session.h3.send_headers(self.stream_id, fields)
        self.session.want_flush()

    async def write_file(self, cycle: HTTPCycle, status: int, headers: Any, path: str) -> None:
        loop = self.session.loop
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
            self._drain = self.session.loop.create_future()
        await self._drain

    def want_body(self, cycle: HTTPCycle) -> None:
        # The app consumed body: send MAX_STREAM_DATA once half a window is free.
        if self.session.quic.credit_due(self.stream_id):
            self.session.want_flush()

    def send_continue(self, cycle: HTTPCycle) -> None:
        """`100 Continue` as an interim response (RFC 9110 §10.1.1, RFC 9114 §4.1)."""
        if not self.closed and not cycle.started:
            self.session.h3.send_headers(self.stream_id, [(b":status", b"100")])
            self.session.want_flush()

    def app_failed(self, cycle: HTTPCycle) -> None:
        # §4.1.1: a response that cannot be completed ends with a stream reset.
        self.session.reset(self, ErrorCode.H3_INTERNAL_ERROR)

    def app_finished(self, cycle: HTTPCycle) -> None:
        if not cycle.complete and not self.closed:
            self.session.reset(self, ErrorCode.H3_INTERNAL_ERROR)
        self.cycle = None  # break the stream <-> cycle cycle (see H2Stream.app_finished)
        self.session.stream_finished(self)

    # -- sending -----------------------------------------------------------------------------

    def _send(self, cycle: HTTPCycle | None, body: bytes, more_body: bool) -> None:
        end = not more_body and (cycle is None or not cycle.trailers)
        session = self.session
        if type(body) is not bytes:
            body = bytes(body)  # aioquic's buffer takes bytes only (an app may send a bytearray)
        session.h3.send_data(self.stream_id, body, end)
        if end:
            self._ended(cycle)  # with trailers announced, write_trailers ends the stream
        if not self.ended and session.quic.unacked(self.stream_id) > _HIGH_WATER:
            self.write_paused = True
            session.paused[self.stream_id] = self
        session.want_flush()

    def send_raw(self, data: bytes, end: bool) -> None:
        """DATA for a non-HTTP use of the stream (RFC 9220 WebSocket frames)."""
        if not self.closed and not self.ended:
            self._send(None, data, not end)

    def _ended(self, cycle: HTTPCycle | None) -> None:
        self.ended = True
        self.write_paused = False
        self.wake()
        if cycle is not None and not cycle.complete:
            cycle.finish()
            self.session.request_done(self)
        self.session.stream_ended(self)

    def wake(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """The stream is gone (reset, or the connection lost): release the app."""
        self.closed = True
        self.write_paused = False
        self.wake()
        if self.cycle is not None and not self.cycle.complete:
            self.cycle.disconnect()
        if self.ws is not None:
            self.ws.lost()


class H3Session(QuicSession):
    """An HTTP/3 connection: one HTTPCycle per request stream."""

    def __init__(
        self,
        quic: ServerQuic,
        endpoint: QuicEndpoint,
        *,
        ctx: ConnectionContext,
        settings: HTTP3Settings,
        server: tuple[str, int] | None,
        server_cert: str | None,
    ) -> None:
        super().__init__(quic, endpoint)
        self.ctx = ctx
        self.settings = settings
        self.server = server
        self._server_cert = server_cert
        self.h3: _ServerH3 = None  # type: ignore[assignment]  # once ALPN chose h3
        self.streams: dict[int, H3Stream] = {}
        self.paused: dict[int, H3Stream] = {}
        self.extensions: dict[str, Any] = {
            "http.response.pathsend": {},
            "http.response.trailers": {},
            "http.response.early_hint": {},
            **ctx.extensions,
        }
        self._goaway: int | None = None  # first stream id not processed, once GOAWAY is sent
        self._highest = -4  # the highest request stream id seen
        self._resets = _Budget(settings.max_client_resets, self.loop.time())
        self._close_timer: asyncio.TimerHandle | None = None
        quic.held = self._held
        ctx.state.connections.add(self)
        if ctx.state.shutting_down:
            self.loop.call_soon(self.shutdown)

    # -- QUIC events -----------------------------------------------------------------------

    def datagram(self, data: bytes, addr: Any) -> None:
        super().datagram(data, addr)
        if self.paused:
            self._resume_paused()
        if self._goaway is not None and not self.closed:
            self._maybe_done()  # acknowledgements may have been what it waited for

    def on_event(self, event: events.QuicEvent) -> None:
        kind = type(event)
        if kind is events.ProtocolNegotiated:
            self.h3 = _ServerH3(self.quic, self.settings, self._malformed)
            return
        h3 = self.h3
        if h3 is None:
            return
        if kind is events.HandshakeCompleted:
            self.extensions["tls"] = self._tls_extension()
            return
        for h3_event in h3.handle_event(event):
            if isinstance(h3_event, DataReceived):
                self._on_data(h3_event)
            elif isinstance(h3_event, HeadersReceived):
                self._on_headers(h3_event)
        if kind is events.StreamReset or kind is events.StopSendingReceived:
            self._on_reset(event.stream_id)  # type: ignore[attr-defined]

    def _on_headers(self, event: HeadersReceived) -> None:
        sid = event.stream_id
        stream = self.streams.get(sid)
        if stream is not None:
            # Trailers of the request (§4.1): they never join the request's headers.
            if event.stream_ended:
                self._remote_end(stream)
            return
        if sid <= self._highest:
            return  # trailers of a request whose response is already complete
        if self._goaway is not None and sid >= self._goaway:
            self._refuse(sid, ErrorCode.H3_REQUEST_REJECTED)  # §5.2
            return
        self._highest = max(self._highest, sid)
        request = parse_request(event.headers, self.settings.connect_protocol)
        if request is None:
            self._refuse(sid, ErrorCode.H3_MESSAGE_ERROR)  # §4.1.2 malformed
            return
        self._begin(sid, request, event.stream_ended)

    def _begin(self, sid: int, request: Request, ended: bool) -> None:
        ctx = self.ctx
        stream = self.streams[sid] = H3Stream(self, sid)
        stream.remote_ended = ended
        scope = self._scope(request)
        if request.protocol is not None:
            from palfrey.protocols.http3_websocket import start_websocket

            start_websocket(self, stream, scope, request)
            return
        app = ctx.app
        length = request.content_length
        limit = ctx.limits.max_body_size
        size = sum(len(n) + len(v) + _FIELD_OVERHEAD for n, v in request.headers)
        refused = 0
        if size > self.settings.max_field_section_size:
            app = plain_response(431, b"Request header fields too large")  # RFC 6585 §5
            refused = 431
        elif request.method == b"CONNECT":
            app = plain_response(405, b"CONNECT is not supported")  # RFC 9110 §9.3.6
        elif limit is not None and length is not None and length > limit:
            app = plain_response(413, b"Request body too large")
            refused = 413
        elif ctx.concurrency is not None and len(ctx.state.cycles) >= ctx.concurrency:
            app = plain_response(503, b"Service Unavailable")
            refused = 503
        if refused and ctx.observer is not None:
            ctx.observer.refused(refused)
        expect = not ended and any(
            n == b"expect" and v.lower() == b"100-continue" for n, v in request.headers
        )
        cycle = stream.cycle = HTTPCycle(scope, stream, ctx, not ended, expect)
        cycle.start(app, self.loop)

    def _on_data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        data = event.data
        if stream.ws is not None:
            if data:
                stream.ws.feed(data)
            if event.stream_ended:
                stream.remote_ended = True
                stream.ws.remote_end()
            return
        cycle = stream.cycle
        if cycle is None:
            return
        if data:
            limit = self.ctx.limits.max_body_size
            if limit is not None and cycle.body_received + len(data) > limit:
                self._too_large(stream, cycle)
                return
            cycle.feed_body(data)
        if event.stream_ended:
            self._remote_end(stream)

    def _remote_end(self, stream: H3Stream) -> None:
        stream.remote_ended = True
        if stream.cycle is not None:
            stream.cycle.body_done()

    def _too_large(self, stream: H3Stream, cycle: HTTPCycle) -> None:
        if self.ctx.observer is not None:
            self.ctx.observer.refused(413)
        if not cycle.started:
            cycle.started = True
            cycle.status = 413
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            stream.write_response(cycle, 413, headers, b"Request body too large", False)
        if not stream.ended:
            self.reset(stream, ErrorCode.H3_REQUEST_CANCELLED)
        else:
            self._stop(stream.stream_id, ErrorCode.H3_NO_ERROR)

    def _on_reset(self, sid: int) -> None:
        """The client reset its request (RESET_STREAM) or stopped our response
        (STOP_SENDING): the app hears `http.disconnect`."""
        stream = self.streams.pop(sid, None)
        self.paused.pop(sid, None)
        if stream is None:
            return  # the other half of a cancellation already handled, or no request
        if not stream.remote_ended or not stream.ended:
            self._stop(sid, ErrorCode.H3_REQUEST_CANCELLED)
            self.quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
        stream.close()
        # Counted once per request cancelled (a client sends RESET_STREAM and STOP_SENDING
        # for one cancellation): each cost an app task.
        if not self._resets.spend(self.loop.time()):
            # Rapid reset (CVE-2023-44487 for HTTP/2; the same attack works here).
            self.close(ErrorCode.H3_EXCESSIVE_LOAD, "too many stream resets")
            return
        self._maybe_done()
        self.want_flush()

    def _malformed(self, sid: int) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None:
            stream.close()
        self._refuse(sid, ErrorCode.H3_MESSAGE_ERROR)

    def _refuse(self, sid: int, code: int) -> None:
        self._stop(sid, code)
        self.quic.reset_stream(sid, code)
        self.want_flush()

    def _stop(self, sid: int, code: int) -> None:
        with contextlib.suppress(ValueError):  # the stream's state is gone already
            self.quic.stop_stream(sid, code)

    def _held(self, sid: int) -> int:
        """Request-stream bytes received and not yet consumed: the app's unread body and
        whatever aioquic holds of a frame not yet complete (a partial HEADERS frame)."""
        held = 0
        h3_stream = self.h3._stream.get(sid) if self.h3 is not None else None
        if h3_stream is not None:
            held = len(h3_stream.buffer)
        stream = self.streams.get(sid)
        if stream is not None:
            if stream.cycle is not None:
                held += stream.cycle.buffered
            elif stream.ws is not None and stream.ws.read_paused:
                return _NO_CREDIT  # the session's queue is full: withhold all credit
        return held

    def _resume_paused(self) -> None:
        quic = self.quic
        for sid, stream in list(self.paused.items()):
            if quic.unacked(sid) <= _LOW_WATER:
                del self.paused[sid]
                stream.write_paused = False
                stream.wake()

    # -- what streams call -----------------------------------------------------------------

    def request_done(self, stream: H3Stream) -> None:
        ctx = self.ctx
        ctx.state.count_request()
        if ctx.observe is not None and stream.cycle is not None:
            ctx.observe(stream.cycle)  # the access log and metrics (palfrey.observe)

    def stream_ended(self, stream: H3Stream) -> None:
        """Our FIN is written. §4.1: a complete response before the complete request
        stops the upload with H3_NO_ERROR."""
        sid = stream.stream_id
        self.paused.pop(sid, None)
        if not stream.remote_ended and not stream.closed:
            self._stop(sid, ErrorCode.H3_NO_ERROR)
        if self.streams.get(sid) is stream:
            del self.streams[sid]
        self._maybe_done()

    def stream_finished(self, stream: H3Stream) -> None:
        self._maybe_done()

    def reset(self, stream: H3Stream, code: int) -> None:
        sid = stream.stream_id
        self.streams.pop(sid, None)
        self.paused.pop(sid, None)
        if not stream.closed and not self.closed:
            stream.close()
            if not stream.remote_ended:
                self._stop(sid, code)
            self.quic.reset_stream(sid, code)
            self.want_flush()
        self._maybe_done()

    # -- the scope -------------------------------------------------------------------------

    def _scope(self, request: Request) -> Scope:
        raw_path, _, query = request.path.partition(b"?")
        peer = self.quic.peer_address
        client = (str(peer[0]), int(peer[1])) if peer else None
        return http_scope(
            self.ctx,
            request.method,
            raw_path,
            query,
            "3",
            self.server,
            client,
            "https",
            request.headers,
            self.extensions,
        )

    def _tls_extension(self) -> dict[str, Any]:
        """The ASGI `tls` extension: QUIC is TLS 1.3 (RFC 9001); aioquic's server does
        not ask for client certificates (the plan refuses tls.cert_reqs with HTTP/3)."""
        schedule = getattr(self.quic.tls, "key_schedule", None)
        suite = getattr(schedule, "cipher_suite", None)
        return {
            "server_cert": self._server_cert,
            "client_cert_chain": [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": 0x0304,
            "cipher_suite": None if suite is None else int(suite),
        }

    # -- shutdown --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful shutdown in two steps (RFC 9114 §5.2): GOAWAY with the largest stream
        id stops the client opening requests without refusing those already on their
        way; after a short grace a second GOAWAY names the first stream not processed.
        The streams in flight finish, then CONNECTION_CLOSE H3_NO_ERROR."""
        if self.closed or self._goaway is not None:
            return
        self._goaway = _MAX_STREAM_ID
        if self.h3 is not None:
            self.h3.send_goaway(_MAX_STREAM_ID)
        for stream in list(self.streams.values()):
            if stream.ws is not None:
                stream.ws.shutdown()  # close 1012, as over HTTP/1.1 and HTTP/2
        self.want_flush()
        grace = min(_CLOSE_GRACE, self.ctx.state.drain_grace)
        self._close_timer = self.loop.call_later(grace, self._final_goaway)

    def _final_goaway(self) -> None:
        self._close_timer = None
        if self.closed:
            return
        highest = max(self.streams, default=self._highest)
        self._goaway = highest + 4
        if self.h3 is not None:
            self.h3.send_goaway(self._goaway)
        self.want_flush()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._goaway is None or self._close_timer is not None:
            return
        if self.streams or self.closed:
            return
        if not self.quic.all_acked():
            return  # the last responses first; re-checked as acknowledgements arrive
        self.close(ErrorCode.H3_NO_ERROR)

    def on_terminated(self) -> None:
        self.ctx.state.connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        for stream in list(self.streams.values()):
            stream.close()
        self.streams.clear()
        self.paused.clear()


def endpoint(
    *,
    ctx: ConnectionContext,
    settings: HTTP3Settings,
    configuration: QuicConfiguration,
    steering: Steering,
    server: tuple[str, int] | None,
    accepting: Callable[[], bool],
) -> QuicEndpoint:
    """The DatagramProtocol serving HTTP/3 on one UDP socket."""
    cert = configuration.certificate
    pem = None
    if cert is not None:
        from cryptography.hazmat.primitives.serialization import Encoding

        pem = cert.public_bytes(Encoding.PEM).decode()

    def session(quic: ServerQuic, owner: QuicEndpoint) -> QuicSession:
        return H3Session(quic, owner, ctx=ctx, settings=settings, server=server, server_cert=pem)

    return QuicEndpoint(
        configuration=configuration,
        session_factory=session,
        steering=steering,
        max_streams=settings.max_concurrent_streams,
        retry=settings.retry,
        tickets=TicketStore() if settings.early_data else None,
        accepting=accepting,
    )
