"""The sans-IO HTTP/2 server connection, driven in memory by the h2 library's client (an
independent engine) and by hand-made frames: requests and responses, bodies, trailers,
flow control both ways, stream states, errors and floods, fed whole and byte by byte."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame, SettingsFrame

from palfrey.protocols import http2_frames as frames
from palfrey.protocols.http2_connection import (
    CLOSED_MEMORY,
    ConnectionTerminated,
    DataReceived,
    PingAcked,
    RequestReceived,
    ServerConnection,
    StreamDrained,
    StreamReset,
)
from palfrey.protocols.http2_fields import ENCODER
from palfrey.protocols.http2_frames import ErrorCode
from palfrey.protocols.settings import HTTP2Settings
from tests.helpers.plans import h2_settings

REQUEST = [(":method", "GET"), (":scheme", "http"), (":path", "/p?q=1"), (":authority", "a")]


class Pair:
    """An h2 client and our server connection, wired in memory."""

    def __init__(
        self, settings: HTTP2Settings | None = None, client: dict[int, int] | None = None
    ) -> None:
        self.now = 0.0
        self.server = ServerConnection(settings or h2_settings(), self.now)
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if client:
            self.client.local_settings = h2.settings.Settings(client=True, initial_values=client)
        self.client.initiate_connection()
        self.events: list[Any] = []
        self.client_events: list[Any] = []
        self.exchange()

    def exchange(self, split: bool = False) -> list[Any]:
        """Move bytes both ways until both sides are quiet; the server's new events."""
        new: list[Any] = []
        for _ in range(50):
            data = self.client.data_to_send()
            if data:
                chunks = [data[i : i + 1] for i in range(len(data))] if split else [data]
                for chunk in chunks:
                    new += self.server.receive(chunk, self.now)
            out = self.server.data_to_send()
            if out:
                self.client_events += self.client.receive_data(out)
            if not data and not out:
                break
        self.events += new
        return new

    def request(self, fields: list[tuple[str, str]] = REQUEST, body: bytes = b"") -> int:
        sid: int = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, fields, end_stream=not body)
        if body:
            self.client.send_data(sid, body, end_stream=True)
        return sid

    def of(self, kind: type, sid: int | None = None) -> list[Any]:
        return [
            e
            for e in self.client_events
            if isinstance(e, kind) and (sid is None or e.stream_id == sid)
        ]


def respond(conn: ServerConnection, sid: int, body: bytes = b"hello", status: int = 200) -> None:
    block = ENCODER.status(status) + ENCODER.block([(b"content-type", b"text/plain")])
    conn.send_headers(sid, block)
    conn.send_data(sid, body, end_stream=True)


def test_request_and_response_round_trip() -> None:
    pair = Pair()
    sid = pair.request()
    [event] = pair.exchange()
    assert isinstance(event, RequestReceived)
    assert (event.stream_id, event.ended) == (sid, True)
    request = event.request
    assert (request.method, request.path, request.scheme) == (b"GET", b"/p?q=1", b"http")
    assert request.headers == [(b"host", b"a")]  # :authority is presented as Host
    respond(pair.server, sid)
    pair.exchange()
    [response] = pair.of(h2.events.ResponseReceived, sid)
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert b"".join(e.data for e in pair.of(h2.events.DataReceived, sid)) == b"hello"
    assert pair.of(h2.events.StreamEnded, sid)
    assert sid not in pair.server.streams  # both sides ended: closed


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_body_and_trailers_arrive_as_data_events(split: bool) -> None:
    pair = Pair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, [*REQUEST[:2], (":path", "/"), (":authority", "a")])
    pair.client.send_data(sid, b"x" * 1000)
    pair.client.send_headers(sid, [("x-sum", "1")], end_stream=True)  # trailers
    events = pair.exchange(split=split)
    body = [e for e in events if isinstance(e, DataReceived)]
    assert b"".join(e.data for e in body) == b"x" * 1000
    assert body[-1].ended
    assert not any(e.ended for e in body[:-1])


def test_response_waits_for_window_credit_and_drains() -> None:
    pair = Pair(client={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    sid = pair.request()
    pair.exchange()
    pair.server.send_headers(sid, ENCODER.status(200))
    pair.server.send_data(sid, b"y" * 250, end_stream=True)
    assert pair.server.pending(sid) == 150
    pair.exchange()
    received = pair.of(h2.events.DataReceived, sid)
    assert sum(len(e.data) for e in received) == 100
    assert not pair.of(h2.events.StreamEnded, sid)
    pair.client.increment_flow_control_window(1000, stream_id=sid)
    events = pair.exchange()
    assert [type(e) for e in events] == [StreamDrained]
    assert sum(len(e.data) for e in pair.of(h2.events.DataReceived, sid)) == 250
    assert pair.of(h2.events.StreamEnded, sid)
    assert pair.server.pending(sid) == 0


def test_request_body_credit_is_returned_by_acknowledge() -> None:
    pair = Pair(h2_settings(initial_window_size=65535))
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, [(":method", "POST"), *REQUEST[1:]])
    for size in (16384, 16384, 16384, 16383):
        pair.client.send_data(sid, b"z" * size)
    pair.exchange()
    assert pair.client.local_flow_control_window(sid) == 0
    pair.server.acknowledge(sid, 65535)
    pair.exchange()
    assert pair.client.local_flow_control_window(sid) == 65535


def test_settings_initial_window_change_moves_open_streams() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    pair.server.send_headers(sid, ENCODER.status(200))
    pair.server.send_data(sid, b"a" * 70000, end_stream=True)
    pair.exchange()
    assert pair.server.pending(sid) == 70000 - 65535
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 80000})
    pair.client.increment_flow_control_window(100000)  # connection window
    pair.exchange()
    assert pair.server.pending(sid) == 0
    assert pair.of(h2.events.StreamEnded, sid)


def test_over_the_stream_limit_is_refused_and_hpack_stays_in_step() -> None:
    conn = _connected(h2_settings(max_concurrent_streams=2))
    encoder = hpack.Encoder()  # a dynamic table: the refused block must still be decoded
    fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"), (b":authority", b"a")]

    def headers(sid: int) -> bytes:
        flags = frames.END_HEADERS | frames.END_STREAM
        return frames.frame(frames.HEADERS, flags, sid, encoder.encode(fields))

    events = conn.receive(headers(1) + headers(3) + headers(5), 0)
    assert [e.stream_id for e in events] == [1, 3]
    assert _frames(conn.data_to_send()) == [("RstStreamFrame", 5, ErrorCode.REFUSED_STREAM)]
    respond(conn, 1)
    conn.data_to_send()
    [event] = conn.receive(headers(7), 0)
    assert (event.stream_id, event.request.path) == (7, b"/x")


def test_client_reset_reaches_the_app_and_late_frames_are_stream_errors() -> None:
    pair = Pair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, [(":method", "POST"), *REQUEST[1:]])
    pair.exchange()
    pair.client.reset_stream(sid, ErrorCodes.CANCEL)
    events = pair.exchange()
    assert [(type(e), e.remote, e.code) for e in events] == [(StreamReset, True, 8)]
    # §5.1: DATA after the client's own RST_STREAM is a STREAM_CLOSED stream error.
    pair.server.receive(frames.frame(frames.DATA, 0, sid, b"late"), 0)
    assert _frames(pair.server.data_to_send()) == [("RstStreamFrame", sid, 5)]


def test_response_before_the_request_ends_keeps_checking_the_request() -> None:
    # §8.1: the response may complete first; the request body is still checked
    # (content-length, trailers), and the client is asked to stop once out of credit.
    conn = _connected(h2_settings(initial_window_size=65535))
    conn.receive(_headers(1, end_stream=False, extra=[(b"content-length", b"3")]), 0)
    respond(conn, 1)
    conn.data_to_send()
    conn.receive(frames.frame(frames.DATA, frames.END_STREAM, 1, b"12345"), 0)
    assert _frames(conn.data_to_send()) == [("RstStreamFrame", 1, ErrorCode.PROTOCOL_ERROR)]
    conn.receive(_headers(3, end_stream=False), 0)
    respond(conn, 3)
    conn.data_to_send()
    conn.receive(frames.frame(frames.DATA, 0, 3, b"q" * 16384) * 3, 0)
    conn.receive(frames.frame(frames.DATA, 0, 3, b"q" * 16383), 0)
    assert _frames(conn.data_to_send())[-1] == ("RstStreamFrame", 3, ErrorCode.NO_ERROR)


def test_at_the_stream_limit_a_finished_response_makes_room() -> None:
    conn = _connected(h2_settings(max_concurrent_streams=1))
    conn.receive(_headers(1, end_stream=False), 0)
    respond(conn, 1)  # complete, while the request is not: the stream stays open
    conn.data_to_send()
    [event] = conn.receive(_headers(3), 0)
    assert event.stream_id == 3
    assert _frames(conn.data_to_send()) == [("RstStreamFrame", 1, ErrorCode.NO_ERROR)]


def test_zero_window_update_on_any_known_stream_is_a_stream_error() -> None:
    conn = _connected()
    conn.receive(_headers(1, end_stream=False), 0)
    respond(conn, 1)  # the response ends before the request
    conn.data_to_send()
    conn.receive(frames.window_update(1, 0), 0)
    assert _frames(conn.data_to_send()) == [("RstStreamFrame", 1, ErrorCode.PROTOCOL_ERROR)]


def test_trailers_are_sent_once() -> None:
    # Found by the fuzz target: a WINDOW_UPDATE after trailers sent them again.
    conn = _connected()
    conn.receive(_headers(1, end_stream=False), 0)
    conn.send_headers(1, ENCODER.status(200))
    conn.send_trailers(1, ENCODER.block([(b"x-t", b"1")]))
    assert _frames(conn.data_to_send()) == [("HeadersFrame", 1, -1)] * 2
    conn.receive(frames.window_update(1, 1), 0)
    assert conn.data_to_send() == b""


def test_headers_on_a_closed_stream_is_a_connection_error() -> None:
    conn = _connected()
    conn.receive(_headers(1), 0)
    respond(conn, 1)
    conn.data_to_send()
    [event] = conn.receive(_headers(1), 0)
    assert isinstance(event, ConnectionTerminated)
    assert (event.code, event.remote) == (ErrorCode.STREAM_CLOSED, False)
    assert conn.receive(_headers(3), 0) == []  # nothing more is read


def test_closed_stream_memory_is_bounded() -> None:
    conn = _connected()
    for sid in range(1, 4 * CLOSED_MEMORY + 3, 2):
        conn.receive(_headers(sid), 0)
        respond(conn, sid)
        conn.data_to_send()
    assert len(conn._closed_streams) == CLOSED_MEMORY  # trimmed to the newest at 2x
    assert 4 * CLOSED_MEMORY + 1 in conn._closed_streams
    assert not conn.streams


def test_ping_is_answered_and_our_ping_acked() -> None:
    pair = Pair()
    pair.client.ping(b"12345678")
    pair.server.ping(b"palfrey!")
    events = pair.exchange()
    assert [type(e) for e in events] == [PingAcked]
    assert [e.ping_data for e in pair.of(h2.events.PingAckReceived)] == [b"12345678"]


def test_graceful_goaway_lets_streams_finish_and_refuses_new_ones() -> None:
    conn = _connected()
    conn.receive(_headers(1), 0)
    conn.goaway()
    assert conn.receive(_headers(3), 0) == []
    assert _frames(conn.data_to_send()) == [
        ("GoAwayFrame", 0, ErrorCode.NO_ERROR),
        ("RstStreamFrame", 3, ErrorCode.REFUSED_STREAM),
    ]
    respond(conn, 1)
    assert _frames(conn.data_to_send()) == [("HeadersFrame", 1, -1), ("DataFrame", 1, -1)]


@pytest.mark.parametrize(
    ("settings", "frame", "code"),
    [
        (h2_settings(max_control_frames=5), frames.ping(b"12345678", False), 0xB),
        (h2_settings(max_control_frames=5), frames.settings({}), 0xB),
        (h2_settings(max_control_frames=5), frames.frame(frames.DATA, 0, 1, b""), 0xB),
        (h2_settings(max_client_resets=5), None, 0xB),
    ],
    ids=["ping", "settings", "empty-data", "rapid-reset"],
)
def test_floods_get_enhance_your_calm(
    settings: HTTP2Settings, frame: bytes | None, code: int
) -> None:
    conn = _connected(settings)
    if frame is None:  # open and reset streams
        data = b"".join(
            _headers(sid, end_stream=False) + frames.rst_stream(sid, 8) for sid in range(1, 40, 2)
        )
    else:
        data = _headers(1, end_stream=False) + frame * 20
    events = conn.receive(data, 0)
    assert isinstance(events[-1], ConnectionTerminated)
    assert _frames(conn.data_to_send())[-1] == ("GoAwayFrame", 0, code)


def test_flood_budget_refills_with_time() -> None:
    conn = _connected(h2_settings(max_control_frames=10))
    for second in range(30):  # one a second: the rate the budget refills at
        assert not conn.receive(frames.ping(b"12345678", False), float(second)), second


def test_upgrade_makes_stream_one_half_closed() -> None:
    values = frames.settings({frames.Setting.INITIAL_WINDOW_SIZE: 1000})[9:]
    conn = ServerConnection(h2_settings(), 0.0, upgrade_settings=values)
    conn.data_to_send()
    conn.receive(frames.PREFACE + frames.settings({}), 0)
    conn.send_headers(1, ENCODER.status(200))
    conn.send_data(1, b"b" * 1500, end_stream=True)
    assert conn.pending(1) == 500  # the HTTP2-Settings window applies


def test_invalid_preface_is_a_protocol_error() -> None:
    conn = ServerConnection(h2_settings(), 0.0)
    conn.data_to_send()
    [event] = conn.receive(b"INVALID CONNECTION PREFACE\r\n\r\n", 0)
    assert (event.code, event.last_stream_id) == (ErrorCode.PROTOCOL_ERROR, 0)
    assert _frames(conn.data_to_send()) == [("GoAwayFrame", 0, ErrorCode.PROTOCOL_ERROR)]


def test_large_header_blocks_are_split_into_continuation() -> None:
    pair = Pair()
    sid = pair.request()
    pair.exchange()
    big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(40)]
    pair.server.send_headers(sid, ENCODER.status(200) + ENCODER.block(big), end_stream=True)
    pair.exchange()
    [response] = pair.of(h2.events.ResponseReceived, sid)
    assert response.headers[1:] == big


def test_serving_path_does_not_import_h2() -> None:
    code = (
        "import sys, palfrey.protocols.negotiation, palfrey.protocols.http2_websocket\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('h2', 'hyperframe')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.stdout.strip() == b"[]", result.stderr


# -- helpers ---------------------------------------------------------------------------------


def _connected(settings: HTTP2Settings | None = None) -> ServerConnection:
    conn = ServerConnection(settings or h2_settings(), 0.0)
    conn.receive(frames.PREFACE + frames.settings({}) + frames.SETTINGS_ACK, 0)
    conn.receive(frames.window_update(0, (1 << 30)), 0)
    conn.data_to_send()
    return conn


def _headers(
    sid: int, *, end_stream: bool = True, extra: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    method = b"GET" if end_stream else b"POST"
    fields = [(b":method", method), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
    block = ENCODER.block([*fields, *(extra or [])])
    flags = frames.END_HEADERS | (frames.END_STREAM if end_stream else 0)
    return frames.frame(frames.HEADERS, flags, sid, block)


def _frames(data: bytes) -> list[tuple[str, int, int]]:
    """(type, stream, error code) of the RST_STREAM and GOAWAY frames in `data`."""
    found = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        view = view[9 + length :]
        if isinstance(frame, (RstStreamFrame, GoAwayFrame)):
            found.append((type(frame).__name__, frame.stream_id, frame.error_code))
        elif not isinstance(frame, SettingsFrame):
            found.append((type(frame).__name__, frame.stream_id, -1))
    return found
