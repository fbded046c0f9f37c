"""Blocking HTTP/2 clients for tests: `H2Peer` drives the h2 library as an independent
client engine; `RawPeer` writes hand-made frames (hyperframe + hpack) for conformance
tests that must send what a correct client never would. Every read has a timeout."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
from hyperframe.frame import (
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT = 5.0


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    informational: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class _Client(h2.connection.H2Connection):
    """h2's client, still reading after a GOAWAY (RFC 9113 §6.8: the streams up to its
    last stream id go on; h2 itself would refuse every later frame)."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            self.state_machine.state = state
        return result


class H2Peer:
    """An h2 client connection over a blocking socket."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        settings: dict[int, int] | None = None,
        tls: ssl.SSLContext | None = None,
        auto_window: bool = True,
        connect: bool = True,
        before: bytes = b"",
    ) -> None:
        sock = socket.create_connection(address, timeout=TIMEOUT)
        if before:  # what a TCP load balancer sends first (a PROXY protocol header)
            sock.sendall(before)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = _Client(config)
        self.responses: dict[int, Response] = {}
        self.events: list[Any] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_window = auto_window
        self.remote_settings: dict[int, int] = {}
        if connect:
            if settings:
                self.conn.local_settings = h2.settings.Settings(
                    client=True, initial_values=settings
                )
            self.conn.initiate_connection()
            self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        end: bool = True,
        authority: str = "localhost",
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            *(headers or []),
        ]
        self.responses[sid] = Response()
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        """Send `body`, waiting for window credit as needed."""
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.receive()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(sid, chunk.tobytes(), end_stream=end and not view)
            self.flush()
        if end and not body:
            self.conn.end_stream(sid)
            self.flush()

    def receive(self, timeout: float = TIMEOUT) -> list[Any]:
        """Read once (waiting up to `timeout`) and handle the events."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            self._handle(event)
        self.events.extend(events)
        self.flush()
        return events

    def _handle(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        response = self.responses.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and response is not None:
            response.status = int(dict(event.headers)[b":status"])
            response.headers = [(n, v) for n, v in event.headers if not n.startswith(b":")]
        elif isinstance(event, h2.events.InformationalResponseReceived) and response:
            response.informational.append(list(event.headers))
        elif isinstance(event, h2.events.DataReceived) and response is not None:
            response.body += event.data
            if self.auto_window and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.TrailersReceived) and response is not None:
            response.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded) and response is not None:
            response.ended = True
        elif isinstance(event, h2.events.StreamReset) and response is not None:
            response.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def wait(self, sid: int, timeout: float = TIMEOUT) -> Response:
        """Read until stream `sid` ends or is reset."""
        return self.wait_all([sid], timeout)[0]

    def wait_all(self, sids: list[int], timeout: float = TIMEOUT) -> list[Response]:
        deadline = time.monotonic() + timeout
        responses = [self.responses[s] for s in sids]
        while not all(r.ended or r.reset is not None for r in responses):
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise TimeoutError(f"streams not done: {sids}")
            self.receive(left)
        return responses

    def wait_for(self, kind: type, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if isinstance(event, kind):
                    self.events.remove(event)
                    return event
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise TimeoutError(f"no {kind.__name__}")
            self.receive(left)

    def close(self) -> None:
        self.sock.close()


class RawPeer:
    """Hand-made frames to a server; frames back parsed with hyperframe."""

    def __init__(self, address: tuple[str, int], *, preface: bool = True) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._buf = b""
        self.eof = False
        if preface:
            self.send(PREFACE + SettingsFrame(0).serialize())

    def send(self, data: bytes | Frame) -> None:
        if isinstance(data, Frame):
            data = data.serialize()
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.eof = True

    def headers(
        self,
        sid: int,
        fields: list[tuple[bytes, bytes]] | None = None,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        block: bytes | None = None,
    ) -> HeadersFrame:
        frame = HeadersFrame(sid)
        frame.data = block if block is not None else self.encode(fields or request_fields())
        if end_stream:
            frame.flags.add("END_STREAM")
        if end_headers:
            frame.flags.add("END_HEADERS")
        return frame

    def encode(self, fields: list[tuple[bytes, bytes]]) -> bytes:
        return self.encoder.encode(fields)

    def next_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame from the server, or None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self._buf[:9]))
                if len(self._buf) >= 9 + length:
                    frame.parse_body(memoryview(self._buf[9 : 9 + length]))
                    self._buf = self._buf[9 + length :]
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return None
            self._buf += data

    def expect(self, kind: type, timeout: float = TIMEOUT, stream_id: int | None = None) -> Any:
        """Skip frames until one of `kind` (on `stream_id`, when given) arrives."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next_frame(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise AssertionError(f"connection closed before {kind.__name__}")
            if isinstance(frame, kind) and (stream_id is None or frame.stream_id == stream_id):
                return frame

    def goaway(self, timeout: float = TIMEOUT) -> GoAwayFrame:
        frame: GoAwayFrame = self.expect(GoAwayFrame, timeout)
        return frame

    def reset(self, stream_id: int, timeout: float = TIMEOUT) -> RstStreamFrame:
        frame: RstStreamFrame = self.expect(RstStreamFrame, timeout, stream_id)
        return frame

    def closed_after_goaway(self, timeout: float = TIMEOUT) -> bool:
        """Read to EOF; True when it came."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.next_frame(max(0.01, deadline - time.monotonic()))
        return self.eof

    def close(self) -> None:
        self.sock.close()


def request_fields(path: bytes = b"/", method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"localhost"),
    ]
