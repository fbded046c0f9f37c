"""The server side of an HTTP/2 connection (RFC 9113), sans-IO.

`ServerConnection.receive(data, now)` parses frames and returns events; the `send_*`
methods queue frames; `data_to_send()` hands back the bytes to write. No sockets, no
event loop, no clock of its own: `now` comes with the data (for the flood budgets).

What it owns: the connection preface and SETTINGS exchange (§3.4, §6.5), the stream
states (§5.1) with the memory of recently closed streams needed to tell late frames
from protocol errors, HPACK decoding (`http2_hpack`) and the request checks
(`http2_fields`), flow control both ways (§5.2, §6.9: inbound credit is returned when
the application calls `acknowledge`; outbound data waits in the stream for credit),
PING, GOAWAY, RST_STREAM, PRIORITY (checked and ignored, §5.3.2), CONTINUATION with
bounds (§10.5), and the flood budgets: rapid reset (CVE-2023-44487) and control frames
(SETTINGS, PING, PRIORITY, empty DATA), both answered with GOAWAY ENHANCE_YOUR_CALM.

A stream error (§5.4.2) sends RST_STREAM and goes on; a connection error (§5.4.1) sends
GOAWAY, emits `ConnectionTerminated` and ignores all later input.
"""

from __future__ import annotations

from collections import deque

from palfrey.protocols import http2_frames as frames
from palfrey.protocols.http2_events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAcked,
    RequestReceived,
    StreamDrained,
    StreamReset,
)
from palfrey.protocols.http2_fields import Request, parse_request, trailers_ok
from palfrey.protocols.http2_frames import (
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    MAX_WINDOW,
    ErrorCode,
    H2ConnectionError,
    Setting,
    StreamError,
)
from palfrey.protocols.http2_hpack import DecodeError, Decoder, HeaderListTooLarge
from palfrey.protocols.settings import HTTP2Settings

__all__ = [
    "ConnectionTerminated",
    "DataReceived",
    "PingAcked",
    "RequestReceived",
    "ServerConnection",
    "StreamDrained",
    "StreamReset",
]

CONN_WINDOW = 1 << 24  # the connection-level receive window kept open (§6.9.1)
FLOOD_PERIOD = 10.0  # seconds over which the flood budgets refill
CONTINUATION_LIMIT = 64  # CONTINUATION frames in one header block (§10.5)
CLOSED_MEMORY = 1024  # closed streams remembered, at least (their late frames told apart)
_REQUEST_CACHE = 64  # decoded request blocks kept per connection
_PREFACE = frames.PREFACE
_unpack_header = frames.HEADER.unpack_from
# How a remembered stream closed.
_ENDED, _RESET_BY_US, _RESET_BY_PEER = 0, 1, 2
_MISS = object()


# -- state ---------------------------------------------------------------------------------


class _Budget:
    """A token bucket: `limit` events at once, refilled over FLOOD_PERIOD seconds."""

    __slots__ = ("limit", "rate", "stamp", "tokens")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = float(limit)
        self.rate = limit / FLOOD_PERIOD
        self.tokens = float(limit)
        self.stamp = now

    def spend(self, now: float) -> bool:
        """Take one token; False when the budget is exhausted."""
        self.tokens = min(self.limit, self.tokens + (now - self.stamp) * self.rate) - 1
        self.stamp = now
        return self.tokens >= 0


class _Stream:
    """One stream that is not closed: open or half-closed either way (§5.1)."""

    __slots__ = (
        "expected",
        "id",
        "local_open",
        "pending",
        "pending_end",
        "pending_size",
        "received",
        "recv_window",
        "remote_open",
        "send_window",
        "trailers",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window
        self.remote_open = True  # the client may send more (no END_STREAM yet)
        self.local_open = True  # our END_STREAM is not on the wire yet
        self.expected: int | None = None  # the request's content-length
        self.received = 0  # request body bytes so far
        self.pending: deque[memoryview] | None = None  # response data waiting for credit
        self.pending_size = 0
        self.pending_end = False  # END_STREAM once `pending` is sent
        self.trailers: bytes | None = None  # a trailer block to send after `pending`


class _HeaderBlock:
    """A header block still arriving in CONTINUATION frames (§6.10)."""

    __slots__ = ("count", "flags", "parts", "self_dependent", "size", "stream_id")

    def __init__(self, stream_id: int, flags: int, first: bytes, self_dependent: bool) -> None:
        self.stream_id = stream_id
        self.flags = flags
        self.parts = [first]
        self.size = len(first)
        self.count = 0
        self.self_dependent = self_dependent


# -- the connection --------------------------------------------------------------------------


class ServerConnection:
    """One HTTP/2 connection, server side (see the module docstring)."""

    def __init__(
        self, settings: HTTP2Settings, now: float, *, upgrade_settings: bytes | None = None
    ) -> None:
        self.settings = settings
        self.streams: dict[int, _Stream] = {}
        self.highest = 0  # the highest client stream id seen (§5.1.1)
        self.closed = False  # a connection error was sent: input is ignored
        self.decoder = Decoder(settings.max_header_list_size)
        # Inbound: what we allow the client; before our SETTINGS are acknowledged it may
        # assume the default (§6.9.2), so a smaller window applies only from the ACK.
        self._local_initial = max(DEFAULT_WINDOW, settings.initial_window_size)
        self._max_frame = settings.max_frame_size
        self._block_limit = settings.max_header_list_size + settings.max_frame_size
        self._conn_recv = CONN_WINDOW
        # Outbound: what the client allows us.
        self._peer_initial = DEFAULT_WINDOW
        self._peer_max_frame = frames.MIN_FRAME_SIZE
        self._conn_send = DEFAULT_WINDOW
        self._out: list[bytes | memoryview] = []
        self._out_data = 0  # DATA payload bytes in `_out`
        self._events: list[Event] = []
        self._buf = b""
        self._preface = False  # the client preface has been read
        self._settings_seen = False  # and the SETTINGS frame that must follow it
        self._block: _HeaderBlock | None = None
        self._closed_streams: dict[int, int] = {}
        self._blocked: dict[int, _Stream] = {}  # streams with data waiting for credit
        self._refuse_above = MAX_WINDOW  # after our GOAWAY, later streams are refused
        self._requests: dict[bytes, Request | None] = {}
        self._requests_generation = 0
        self._resets = _Budget(settings.max_client_resets, now)
        self._control = _Budget(settings.max_control_frames, now)
        self._now = now
        self._start(upgrade_settings)

    def _start(self, upgrade_settings: bytes | None) -> None:
        s = self.settings
        values: dict[int, int] = {
            Setting.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
            Setting.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
            Setting.MAX_FRAME_SIZE: s.max_frame_size,
            Setting.ENABLE_PUSH: 0,
        }
        if s.connect_protocol:
            values[Setting.ENABLE_CONNECT_PROTOCOL] = 1
        if s.initial_window_size != DEFAULT_WINDOW:
            values[Setting.INITIAL_WINDOW_SIZE] = s.initial_window_size
        # §3.4: the server preface is a SETTINGS frame; then the connection window.
        self._out.append(frames.settings(values))
        self._out.append(frames.window_update(0, CONN_WINDOW - DEFAULT_WINDOW))
        if upgrade_settings is not None:
            # RFC 7540 §3.2: the HTTP2-Settings values apply as if sent in SETTINGS, and
            # the upgraded request is stream 1, half-closed (remote).
            try:
                self._apply_settings(frames.settings_values(upgrade_settings))
            except H2ConnectionError as exc:
                self._fail(exc.code)
                return
            stream = self._open(1)
            stream.remote_open = False
            self.highest = 1

    # -- input -------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the client; the events they complete, in order."""
        if self.closed:
            return []
        self._now = now
        events: list[Event] = []
        self._events = events
        try:
            self._buf = self._read(data)
        except H2ConnectionError as exc:
            self._fail(exc.code)
            self._buf = b""
            return events
        if self._conn_recv < CONN_WINDOW >> 1 and not self.closed:
            self._out.append(frames.window_update(0, CONN_WINDOW - self._conn_recv))
            self._conn_recv = CONN_WINDOW
        return events

    def _read(self, data: bytes) -> bytes:
        """Handle the whole frames of what was left over and `data`; what is left now."""
        pos = 0
        left = self._buf
        if left:
            # Complete the partial frame with at most one frame's worth of `data`
            # rather than copying all of `data` behind it (large bodies arrive in reads
            # of hundreds of KiB, each ending in a partial frame).
            cut = 9 + self._max_frame
            head = left + data[:cut]
            done = self._frames(head, 0)
            if len(data) <= cut or self.closed:
                return head[done:]
            pos = done - len(left)  # the partial frame is complete: at most `cut` bytes
        pos = self._frames(data, pos)
        return data[pos:] if pos < len(data) else b""

    def _frames(self, buf: bytes, pos: int) -> int:
        """Handle each whole frame in `buf` from `pos`; the position after the last."""
        if not self._preface:
            size = len(_PREFACE)
            if buf[:size] != _PREFACE[: len(buf)]:
                # §3.4: an invalid preface is a connection error of type PROTOCOL_ERROR.
                raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
            if len(buf) < size:
                return 0
            self._preface = True
            pos += size
        end = len(buf)
        max_frame = self._max_frame
        while end - pos >= 9:
            word, flags, sid = _unpack_header(buf, pos)
            length = word >> 8
            if length > max_frame:
                # §4.2: too large for our SETTINGS_MAX_FRAME_SIZE.
                raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "frame too large")
            start = pos + 9
            if end - start < length:
                break
            pos = start + length
            try:
                self._frame(word & 0xFF, flags, sid & MAX_WINDOW, buf[start:pos])
            except StreamError as exc:
                self._stream_error(exc.stream_id, exc.code)
            if self.closed:
                break
        return pos

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._block is not None and kind != frames.CONTINUATION:
            # §6.10: a header block is contiguous; nothing may interleave.
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "frame inside a header block")
        if not self._settings_seen:
            # §3.4: the client preface ends with a SETTINGS frame (not an ACK).
            if kind != frames.SETTINGS or flags & frames.ACK:
                raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "first frame not SETTINGS")
            self._settings_seen = True
        if kind == frames.HEADERS:
            self._on_headers(flags, sid, payload)
        elif kind == frames.DATA:
            self._on_data(flags, sid, payload)
        elif kind == frames.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == frames.SETTINGS:
            self._on_settings(flags, sid, payload)
        elif kind == frames.PING:
            self._on_ping(flags, sid, payload)
        elif kind == frames.RST_STREAM:
            self._on_rst_stream(sid, payload)
        elif kind == frames.PRIORITY:
            self._on_priority(sid, payload)
        elif kind == frames.CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif kind == frames.GOAWAY:
            self._on_goaway(sid, payload)
        elif kind == frames.PUSH_PROMISE:
            # §8.4: clients cannot push.
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # §4.1, §5.5: frames of unknown types are ignored.

    # -- header blocks -------------------------------------------------------------------

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid & 1:
            # §5.1.1 (clients use odd ids); §6.2 (never stream 0).
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on an even stream id")
        block = frames.strip_padding(payload, flags)
        self_dependent = False
        if flags & frames.PRIORITY_FLAG:
            if len(block) < 5:
                raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS priority truncated")
            self_dependent = frames.u32(block) & MAX_WINDOW == sid
            block = block[5:]
        if not flags & END_HEADERS:
            self._block = _HeaderBlock(sid, flags, block, self_dependent)
            self._check_block(self._block)
            return
        self._header_block(sid, flags, block, self_dependent)

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        pending = self._block
        if pending is None or pending.stream_id != sid:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        pending.parts.append(payload)
        pending.size += len(payload)
        pending.count += 1
        self._check_block(pending)
        if flags & END_HEADERS:
            self._block = None
            block = b"".join(pending.parts)
            self._header_block(sid, pending.flags, block, pending.self_dependent)

    def _check_block(self, pending: _HeaderBlock) -> None:
        if pending.size > self._block_limit or pending.count >= CONTINUATION_LIMIT:
            # §10.5: a CONTINUATION flood.
            raise H2ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")

    def _header_block(self, sid: int, flags: int, block: bytes, self_dependent: bool) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            self._trailers(stream, flags, self._decode(block), self_dependent)
        elif sid <= self.highest:
            self._decode(block)  # §4.3: keep the HPACK context in step
            self._late_headers(sid)
        elif sid > self._refuse_above or (
            len(self.streams) >= self.settings.max_concurrent_streams and not self._reap()
        ):
            # §5.1.2, §6.8: not processed; the client may retry (REFUSED_STREAM, §8.7).
            self._decode(block)
            self.highest = sid
            self._refuse(sid, ErrorCode.REFUSED_STREAM)
        else:
            self.highest = sid
            self._request(sid, flags, block, self_dependent)

    def _reap(self) -> bool:
        """At the stream limit, end a stream whose response is complete but whose request
        is not (see `_local_end`) with RST_STREAM NO_ERROR (§8.1), so that it does not
        cost the client a new stream; whether one was found."""
        for stream in self.streams.values():
            if not stream.local_open:
                self._refuse(stream.id, ErrorCode.NO_ERROR)
                return True
        return False

    def _request(self, sid: int, flags: int, block: bytes, self_dependent: bool) -> None:
        request = self._parse(block)
        ended = bool(flags & END_STREAM)
        if (
            request is None
            or self_dependent  # §5.3.1
            # §8.1.1: a content-length that the (absent) body contradicts.
            or (ended and request.content_length)
        ):
            self._refuse(sid, ErrorCode.PROTOCOL_ERROR)
            return
        stream = self._open(sid)
        stream.expected = request.content_length
        if ended:
            stream.remote_open = False
        self._events.append(RequestReceived(sid, request, ended))

    def _open(self, sid: int) -> _Stream:
        stream = self.streams[sid] = _Stream(sid, self._peer_initial, self._local_initial)
        return stream

    def _parse(self, block: bytes) -> Request | None:
        """The checked request of a block; a block that left the HPACK table unchanged
        decodes the same way until the table changes, so its result is reused."""
        decoder = self.decoder
        cache = self._requests
        generation = decoder.generation
        if generation == self._requests_generation:
            hit = cache.get(block, _MISS)
            if hit is not _MISS:
                return hit  # type: ignore[return-value]
        else:
            cache.clear()
            self._requests_generation = generation
        request = parse_request(self._decode(block), self.settings.connect_protocol)
        if decoder.generation == generation:
            if len(cache) >= _REQUEST_CACHE:
                cache.clear()
            cache[block] = request
        return request

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self.decoder.decode(block)
        except HeaderListTooLarge as exc:
            raise H2ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, str(exc)) from None
        except DecodeError as exc:
            raise H2ConnectionError(ErrorCode.COMPRESSION_ERROR, str(exc)) from None  # §4.3

    def _trailers(
        self, stream: _Stream, flags: int, fields: list[tuple[bytes, bytes]], self_dep: bool
    ) -> None:
        sid = stream.id
        if self_dep:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
        if not stream.remote_open:
            # §5.1: half-closed (remote) accepts no more HEADERS.
            raise StreamError(sid, ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
        if not flags & END_STREAM or not trailers_ok(fields):
            # §8.1: a trailer section ends the stream and holds no pseudo-header.
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "malformed trailers")
        self._remote_end(stream, b"")

    def _late_headers(self, sid: int) -> None:
        how = self._closed_streams.get(sid)
        if how is None:
            # §5.1.1: a new stream's id must exceed every earlier one.
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "stream id lower than before")
        if how == _ENDED:
            raise H2ConnectionError(ErrorCode.STREAM_CLOSED, "HEADERS on a closed stream")
        if how == _RESET_BY_PEER:
            raise StreamError(sid, ErrorCode.STREAM_CLOSED, "HEADERS after RST_STREAM")
        # Reset by us: frames the client sent before it saw the reset are ignored.

    # -- DATA ----------------------------------------------------------------------------

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        # §6.9: every DATA frame counts against the connection window, whatever its
        # stream's state.
        self._conn_recv -= size
        if self._conn_recv < 0:
            raise H2ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window exceeded")
        data = frames.strip_padding(payload, flags) if flags & frames.PADDED else payload
        stream = self.streams.get(sid)
        if stream is None or not stream.remote_open:
            self._late_data(sid, stream)
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR, "stream window exceeded")
        received = stream.received = stream.received + len(data)
        end = flags & END_STREAM
        expected = stream.expected
        if expected is not None and (received > expected or (end and received != expected)):
            # §8.1.1: a body that disagrees with content-length makes it malformed.
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "body length != content-length")
        if size != len(data):
            # §6.1: padding is flow-controlled but never reaches the app: credit it now.
            self.acknowledge(sid, size - len(data))
        if end:
            self._remote_end(stream, data)
            return
        if not data and not self._control.spend(self._now):
            self._calm()  # empty DATA frames are a flood vector (CVE-2019-9518)
        self._events.append(DataReceived(sid, data, False))
        if not stream.local_open and stream.recv_window <= 0:
            # §8.1: the response is complete and the client has used all its credit:
            # ask it to stop sending the request (NO_ERROR).
            self._refuse(sid, ErrorCode.NO_ERROR)

    def _late_data(self, sid: int, stream: _Stream | None) -> None:
        if sid > self.highest:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")  # §5.1
        if stream is None and self._closed_streams.get(sid) == _RESET_BY_US:
            return  # in flight before the client saw our RST_STREAM
        # §5.1: half-closed (remote) or closed.
        raise StreamError(sid, ErrorCode.STREAM_CLOSED, "DATA after END_STREAM")

    def _remote_end(self, stream: _Stream, data: bytes) -> None:
        stream.remote_open = False
        self._events.append(DataReceived(stream.id, data, True))
        if not stream.local_open:
            self._close(stream, _ENDED)

    # -- control frames ------------------------------------------------------------------

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = frames.u32(payload) & MAX_WINDOW
        if not sid:
            if not increment:
                raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "zero WINDOW_UPDATE")  # §6.9
            self._conn_send += increment
            if self._conn_send > MAX_WINDOW:
                raise H2ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
            self._unblock()
            return
        stream = self.streams.get(sid)
        if stream is None and sid > self.highest:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
        if not increment:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "zero WINDOW_UPDATE")  # §6.9
        if stream is None:
            return  # §6.9: a closed stream's late WINDOW_UPDATE is ignored
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow")
        if stream.local_open and (stream.pending_size or stream.pending_end):
            self._push(stream, notify=True)

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & frames.ACK:
            if payload:
                raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._settings_acknowledged()
            return
        values = frames.settings_values(payload)
        if not self._control.spend(self._now):
            self._calm()
        grew = self._apply_settings(values)
        self._out.append(frames.SETTINGS_ACK)
        if grew:
            self._unblock()

    def _apply_settings(self, values: list[tuple[int, int]]) -> bool:
        """Apply the client's settings in order (§6.5.3); whether windows grew."""
        grew = False
        for ident, value in values:
            if ident == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window too large")
                delta = value - self._peer_initial
                self._peer_initial = value
                for stream in self.streams.values():
                    # §6.9.2: every open stream's window moves by the difference.
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
                grew = grew or delta > 0
            elif ident == Setting.MAX_FRAME_SIZE:
                if not frames.MIN_FRAME_SIZE <= value <= frames.MAX_FRAME_SIZE:
                    raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif ident == Setting.ENABLE_PUSH and value > 1:
                raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            # HEADER_TABLE_SIZE needs nothing: responses never use the dynamic table.
            # Unknown settings are ignored (§6.5.2).
        return grew

    def _settings_acknowledged(self) -> None:
        target = self.settings.initial_window_size
        delta = target - self._local_initial
        if delta:
            # §6.9.2: our smaller initial window applies from the client's ACK.
            self._local_initial = target
            for stream in self.streams.values():
                stream.recv_window += delta

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING length")
        if flags & frames.ACK:
            self._events.append(PingAcked())
            return
        if not self._control.spend(self._now):
            self._calm()
        self._out.append(frames.ping(payload, ack=True))

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if not sid:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length")
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.highest:
                raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            if not self._control.spend(self._now):
                self._calm()
            return
        self._close(stream, _RESET_BY_PEER)
        self._events.append(StreamReset(sid, frames.u32(payload), remote=True))
        if not self._resets.spend(self._now):
            self._calm()  # rapid reset, CVE-2023-44487

    def _on_priority(self, sid: int, payload: bytes) -> None:
        # §5.3.2: priority signals are accepted and ignored, but the frame is checked.
        if not sid:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY length")
        if frames.u32(payload) & MAX_WINDOW == sid:
            if sid > self.highest:
                raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
        if not self._control.spend(self._now):
            self._calm()

    def _on_goaway(self, sid: int, payload: bytes) -> None:
        if sid:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY length")
        last = frames.u32(payload) & MAX_WINDOW
        self._events.append(ConnectionTerminated(frames.u32(payload, 4), last, remote=True))

    def _calm(self) -> None:
        raise H2ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "flood")  # §10.5

    # -- errors and closing ----------------------------------------------------------------

    def _stream_error(self, sid: int, code: ErrorCode) -> None:
        """§5.4.2: RST_STREAM; the app of an open stream learns of it."""
        stream = self.streams.get(sid)
        self._out.append(frames.rst_stream(sid, code))
        if stream is not None:
            self._close(stream, _RESET_BY_US)
            self._events.append(StreamReset(sid, code, remote=False))

    def _refuse(self, sid: int, code: ErrorCode) -> None:
        """RST_STREAM on a stream the application does not know (or no longer needs)."""
        self._out.append(frames.rst_stream(sid, code))
        stream = self.streams.get(sid)
        if stream is not None:
            self._close(stream, _RESET_BY_US)
        else:
            self._remember(sid, _RESET_BY_US)

    def _close(self, stream: _Stream, how: int) -> None:
        sid = stream.id
        del self.streams[sid]
        self._blocked.pop(sid, None)
        stream.pending = None
        stream.pending_size = 0
        self._remember(sid, how)

    def _remember(self, sid: int, how: int) -> None:
        memory = self._closed_streams
        memory[sid] = how
        if len(memory) > 2 * CLOSED_MEMORY:
            # Keep the newest CLOSED_MEMORY at once: deleting the oldest one at a time
            # makes each `next(iter(dict))` walk the holes left at the front.
            self._closed_streams = dict(list(memory.items())[-CLOSED_MEMORY:])

    def _fail(self, code: ErrorCode) -> None:
        """§5.4.1: GOAWAY with the last stream we processed, then nothing more."""
        self._out.append(frames.goaway(self.highest, code))
        self.closed = True
        self._block = None
        self._events.append(ConnectionTerminated(code, self.highest, remote=False))

    # -- output: what the application sends ----------------------------------------------------

    def send_headers(self, sid: int, block: bytes, end_stream: bool = False) -> None:
        """A response (or informational) header block on an open stream."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open or self.closed:
            return
        self._out += frames.header_block(sid, block, end_stream, self._peer_max_frame)
        if end_stream:
            self._local_end(stream)

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        """Body bytes: sent as far as the windows allow, the rest kept for later credit."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open or stream.pending_end or self.closed:
            return
        size = len(data)
        if not size and not end_stream:
            return  # an empty DATA frame carries nothing
        if (
            not stream.pending_size
            and size <= self._conn_send
            and size <= stream.send_window
            and size <= self._peer_max_frame
        ):
            # The common case: the whole chunk fits in one frame now.
            self._conn_send -= size
            stream.send_window -= size
            self._out_data += size
            flags = END_STREAM if end_stream else 0
            self._out += (frames.frame_header(frames.DATA, flags, sid, size), data)
            if end_stream:
                self._local_end(stream)
            return
        if data:
            if stream.pending is None:
                stream.pending = deque()
            stream.pending.append(memoryview(data))
            stream.pending_size += size
        stream.pending_end = end_stream
        self._push(stream, notify=False)

    def send_trailers(self, sid: int, block: bytes) -> None:
        """A trailer section: HEADERS with END_STREAM after all the data (§8.1)."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open or stream.pending_end or self.closed:
            return
        stream.trailers = block
        stream.pending_end = True
        self._push(stream, notify=False)

    def pending(self, sid: int) -> int:
        """Response bytes of the stream waiting for flow-control credit."""
        stream = self.streams.get(sid)
        return 0 if stream is None else stream.pending_size

    def is_open(self, sid: int) -> bool:
        """Whether the stream can still carry response frames."""
        stream = self.streams.get(sid)
        return stream is not None and stream.local_open and not self.closed

    def _push(self, stream: _Stream, notify: bool) -> None:
        """Send what the windows allow; the end of the stream once all is sent."""
        sid = stream.id
        pending = stream.pending
        out = self._out
        ended = False
        while pending:  # None or empty: nothing held
            window = min(self._conn_send, stream.send_window, self._peer_max_frame)
            if window <= 0:
                self._blocked[sid] = stream
                return
            chunk = pending[0]
            if len(chunk) > window:
                pending[0] = chunk[window:]
                chunk = chunk[:window]
            else:
                pending.popleft()
            size = len(chunk)
            self._conn_send -= size
            stream.send_window -= size
            stream.pending_size -= size
            self._out_data += size
            ended = not pending and stream.pending_end and stream.trailers is None
            out += (frames.frame_header(frames.DATA, END_STREAM if ended else 0, sid, size), chunk)
        self._blocked.pop(sid, None)
        if stream.pending_end:
            stream.pending_end = False
            if stream.trailers is not None:
                out += frames.header_block(sid, stream.trailers, True, self._peer_max_frame)
                stream.trailers = None
            elif not ended:
                out.append(frames.frame_header(frames.DATA, END_STREAM, sid, 0))
            self._local_end(stream)
        if notify:
            self._events.append(StreamDrained(sid))

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            if self._conn_send <= 0:
                break
            self._push(stream, notify=True)

    def _local_end(self, stream: _Stream) -> None:
        """Our END_STREAM is on the wire."""
        stream.local_open = False
        if not stream.remote_open:
            self._close(stream, _ENDED)
        elif stream.recv_window <= 0:
            self._refuse(stream.id, ErrorCode.NO_ERROR)  # §8.1, see _on_data

    def acknowledge(self, sid: int, size: int) -> None:
        """Return `size` bytes of credit to the client for this stream (§6.9)."""
        stream = self.streams.get(sid)
        if stream is not None and stream.remote_open and size > 0 and not self.closed:
            stream.recv_window += size
            self._out.append(frames.window_update(sid, size))

    def reset_stream(self, sid: int, code: ErrorCode) -> None:
        """RST_STREAM from the application's side (§5.4.2)."""
        if sid in self.streams and not self.closed:
            self._refuse(sid, code)

    def ping(self, payload: bytes) -> None:
        if not self.closed:
            self._out.append(frames.ping(payload, ack=False))

    def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        """GOAWAY with the last stream we process (§6.8). NO_ERROR: a graceful drain,
        later streams are refused and the current ones go on; otherwise the connection
        is finished."""
        if self.closed:
            return
        if code:
            self._fail(code)
            return
        self._refuse_above = min(self._refuse_above, self.highest)
        self._out.append(frames.goaway(self.highest, code))

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        self._out_data = 0
        return data

    def output(self) -> tuple[list[bytes | memoryview], int]:
        """The pieces queued for the client, not joined, and how many bytes of DATA
        payload they hold (large bodies can be written without a copy)."""
        out, size = self._out, self._out_data
        self._out = []
        self._out_data = 0
        return out, size
