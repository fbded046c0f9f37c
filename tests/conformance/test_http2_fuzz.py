"""Fuzzing the HTTP/2 frame layer: random and mutated frame sequences, split at random
points, fed to the sans-IO server connection while a model application answers, resets
and keeps writing to the streams it was given.

Whatever arrives, the connection must only ever end in a protocol error (GOAWAY, never
an exception), keep its state bounded, write well-formed frames whose header blocks the
hpack library decodes, and never send HEADERS or DATA on a stream after it closed it
(RST_STREAM or END_STREAM) or on one it never opened.

    HTTP2_FUZZ_EXAMPLES=20000 python -m pytest tests/conformance/test_http2_fuzz.py

runs a longer search (the default keeps CI fast).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import hpack
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palfrey.protocols import http2_frames as frames
from palfrey.protocols.http2_connection import (
    CLOSED_MEMORY,
    CONTINUATION_LIMIT,
    ConnectionTerminated,
    RequestReceived,
    ServerConnection,
    StreamReset,
)
from palfrey.protocols.http2_fields import ENCODER
from tests.helpers.plans import h2_settings

EXAMPLES = int(os.environ.get("HTTP2_FUZZ_EXAMPLES", "300"))
SETTINGS = h2_settings(
    max_concurrent_streams=4,
    initial_window_size=4096,
    max_frame_size=16384,
    max_header_list_size=4096,
    max_client_resets=20,
    max_control_frames=50,
)
_CLIENT_ENCODER = hpack.Encoder()
_REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]

stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 13, 0x7FFFFFFF]) | st.integers(0, 64)


@st.composite
def payloads(draw: Any, kind: int) -> bytes:
    """A payload that is valid for `kind` most of the time, random otherwise."""
    if draw(st.integers(0, 4)) == 0:
        return bytes(draw(st.binary(max_size=40)))
    if kind == frames.HEADERS:
        extra = draw(
            st.lists(
                st.tuples(
                    st.sampled_from([b"content-length", b"te", b"x-a", b":path", b"Upper"]),
                    st.sampled_from([b"0", b"3", b"trailers", b"v", b""]),
                ),
                max_size=3,
            )
        )
        fields = _REQUEST if draw(st.booleans()) else []
        return ENCODER.block([*fields, *extra])
    if kind == frames.SETTINGS:
        pairs = draw(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2**32 - 1)), max_size=3))
        return b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    if kind in (frames.WINDOW_UPDATE, frames.RST_STREAM):
        return struct.pack(">I", draw(st.sampled_from([0, 1, 100, 65535, 2**31 - 1])))
    if kind == frames.PING:
        return b"pingpong"
    if kind == frames.PRIORITY:
        return struct.pack(">IB", draw(stream_ids), 16)
    if kind == frames.GOAWAY:
        return struct.pack(">II", draw(stream_ids), draw(st.integers(0, 13)))
    return bytes(draw(st.binary(max_size=300)))


@st.composite
def frame_bytes(draw: Any) -> bytes:
    kind = draw(st.sampled_from(range(10)) | st.integers(10, 255))
    flags = draw(
        st.sampled_from([0, frames.END_STREAM, frames.END_HEADERS, 0x5]) | st.integers(0, 255)
    )
    data = frames.frame(kind, flags, draw(stream_ids), draw(payloads(kind)))
    if draw(st.integers(0, 9)) == 0:  # a mutation anywhere in the frame
        spot = draw(st.integers(0, len(data) - 1))
        data = data[:spot] + bytes([draw(st.integers(0, 255))]) + data[spot + 1 :]
    return data


actions = st.one_of(
    st.tuples(st.just("request"), st.tuples(st.booleans(), st.sampled_from([0, 0, 3, 10]))),
    st.tuples(st.just("data"), st.tuples(st.integers(0, 7), st.integers(0, 5000), st.booleans())),
    st.tuples(st.just("frame"), frame_bytes()),
    st.tuples(st.just("respond"), st.integers(0, 7)),
    st.tuples(st.just("write"), st.integers(0, 7)),
    st.tuples(st.just("reset"), st.integers(0, 7)),
    st.tuples(st.just("trailers"), st.integers(0, 7)),
    st.tuples(st.just("tick"), st.floats(0, 20)),
)


class Checker:
    """Reads everything the server writes and holds it to the rules."""

    def __init__(self) -> None:
        self.buf = b""
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.finished: set[int] = set()  # RST_STREAM or END_STREAM sent
        self.opened: set[int] = set()  # streams the application was given
        self.last_error = False  # a GOAWAY with an error code was sent

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            self.check(frame)

    def check(self, frame: Frame) -> None:
        assert not self.last_error, f"{type(frame).__name__} after an error GOAWAY"
        sid = frame.stream_id
        if isinstance(frame, (HeadersFrame, DataFrame)):
            assert sid in self.opened, f"{type(frame).__name__} on stream {sid} never opened"
            assert sid not in self.finished, f"{type(frame).__name__} on closed stream {sid}"
            if isinstance(frame, HeadersFrame):
                self.decoder.decode(frame.data, raw=True)  # a well-formed block
            if "END_STREAM" in frame.flags:
                self.finished.add(sid)
        elif isinstance(frame, RstStreamFrame):
            self.finished.add(sid)
        elif type(frame).__name__ == "GoAwayFrame":
            self.last_error = frame.error_code != 0


@given(
    preface=st.sampled_from(["good", "good", "good", "mutated"]),
    steps=st.lists(actions, max_size=40),
    splits=st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_frame_sequences(preface: str, steps: list[Any], splits: list[int]) -> None:
    now = 0.0
    conn = ServerConnection(SETTINGS, now)
    checker = Checker()
    start = frames.PREFACE + frames.settings({})
    if preface == "mutated":
        start = start[:5] + b"X" + start[6:]
    streams: list[int] = []  # streams the application holds, in order
    started: set[int] = set()  # streams whose response head the application sent
    terminated = False
    split_index = 0
    chunks = [start]
    next_id = 1
    for action, value in [("frame", b""), *steps]:
        if action == "request":  # a well-formed request on the next stream id
            end, length = value
            block = ENCODER.block([*_REQUEST, (b"content-length", b"%d" % length)])
            flags = frames.END_HEADERS | (frames.END_STREAM if end else 0)
            action, value = "frame", frames.frame(frames.HEADERS, flags, next_id, block)
            next_id += 2
        elif action == "data":  # body on one of the streams the app was given
            index, size, end = value
            sid = streams[index % len(streams)] if streams else 1
            flags = frames.END_STREAM if end else 0
            action, value = "frame", frames.frame(frames.DATA, flags, sid, b"d" * size)
        if action == "frame":
            chunks.append(value)
            data = b"".join(chunks)
            chunks = []
            # Deliver in pieces of varying sizes: the result must not depend on reads.
            while data:
                size = splits[split_index % len(splits)]
                split_index += 1
                piece, data = data[:size], data[size:]
                for event in conn.receive(piece, now):
                    if isinstance(event, RequestReceived):
                        streams.append(event.stream_id)
                        checker.opened.add(event.stream_id)
                    elif isinstance(event, ConnectionTerminated) and not event.remote:
                        terminated = True
                    elif isinstance(event, StreamReset):
                        pass  # the app keeps its handle and may still write (a race)
        elif action == "tick":
            now += value
        elif streams:
            _app_action(conn, action, streams[value % len(streams)], started)
        checker.feed(conn.data_to_send())
        _check_bounds(conn)
    if terminated:
        assert conn.closed
        assert conn.receive(frames.PREFACE, now) == []


def _app_action(conn: ServerConnection, action: str, sid: int, started: set[int]) -> None:
    """What an application does through the adapter: one response head, then body,
    trailers or a reset, in any order and whatever the stream's state."""
    if action == "reset":
        conn.reset_stream(sid, frames.ErrorCode.CANCEL)
        return
    if sid not in started:
        started.add(sid)
        conn.send_headers(sid, ENCODER.status(200))
    if action == "respond":
        conn.send_data(sid, b"r" * 5000, end_stream=True)
    elif action == "write":
        conn.send_data(sid, b"w" * 20000)
    else:
        conn.send_trailers(sid, ENCODER.block([(b"x-t", b"1")]))


def _check_bounds(conn: ServerConnection) -> None:
    assert len(conn._buf) < 9 + SETTINGS.max_frame_size
    assert len(conn.streams) <= SETTINGS.max_concurrent_streams
    assert len(conn._closed_streams) <= 2 * CLOSED_MEMORY
    block = conn._block
    if block is not None:
        assert block.count < CONTINUATION_LIMIT
        assert block.size <= SETTINGS.max_header_list_size + SETTINGS.max_frame_size
