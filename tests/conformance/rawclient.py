"""A raw-socket HTTP/1.1 client for the conformance corpus.

Bytes go on the wire exactly as written; what comes back is read until the server closes
the connection (or a deadline passes) and then split into responses by h11 acting as an
independent client-side parser, so a second (smuggled) response can never hide inside the
first one's framing.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import h11

#: Between the two writes of a split payload: long enough for the server to read the first
#: on its own (if it reads both at once on a loaded machine, the case still holds).
SPLIT_PAUSE = 0.01


@dataclass(frozen=True)
class Response:
    """One complete response as an independent client parser saw it."""

    status: int
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    informational: tuple[int, ...] = ()

    def header(self, name: str) -> str | None:
        """The (comma-joined) value of a header, None when absent."""
        values = [value for key, value in self.headers if key == name.lower()]
        return ", ".join(values) if values else None

    def closes(self) -> bool:
        """Whether the response carries the "close" connection option (RFC 9112 §9.6)."""
        value = self.header("connection") or ""
        return "close" in [token.strip().lower() for token in value.split(",")]


@dataclass(frozen=True)
class Exchange:
    """Everything observed on one connection."""

    raw: bytes
    eof: bool
    """The server closed its side (FIN or RST) before the deadline."""
    reset: bool
    """The server reset the connection (ECONNRESET) instead of closing cleanly."""
    elapsed: float
    """Seconds from connecting until close (or the deadline)."""
    responses: tuple[Response, ...] = ()
    trailing: bytes = b""
    """Bytes after the last complete response that do not form one."""
    parse_error: str | None = None

    def summary(self) -> str:
        statuses = [r.status for r in self.responses]
        text = f"responses={statuses} eof={self.eof} reset={self.reset} elapsed={self.elapsed:.2f}s"
        if self.trailing:
            text += f" trailing={self.trailing[:120]!r}"
        if self.parse_error:
            text += f" parse_error={self.parse_error}"
        return f"{text} raw={self.raw[:300]!r}"


@dataclass
class _Reader:
    sock: socket.socket
    deadline: float
    chunks: list[bytes] = field(default_factory=list)
    eof: bool = False
    reset: bool = False

    def pump(self, wait: float) -> None:
        """Read what is available within `wait` seconds (bounded by the deadline)."""
        end = min(time.monotonic() + wait, self.deadline)
        while not self.eof:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if not readable:
                return
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                self.eof = self.reset = True
                return
            if not data:
                self.eof = True
                return
            self.chunks.append(data)


def exchange(
    address: tuple[str, int],
    payload: bytes,
    *,
    deadline: float = 2.5,
    dribble: float | None = None,
    methods: Sequence[str] = (),
    split: int | tuple[int, ...] | None = None,
) -> Exchange:
    """Send `payload`, read until the server closes or `deadline` seconds pass, parse.

    With `dribble`, the payload goes one byte at a time with that many seconds between
    bytes (slowloris), stopping early when the server answers or closes. The client never
    half-closes its side: a server must not need the client's EOF to finish an error.
    `methods` are the request methods in order (they decide HEAD response framing).
    With `split` (an offset, or several), the payload goes as separate writes cut at
    those offsets, `SPLIT_PAUSE` seconds apart, so that the server reads them separately.
    """
    started = time.monotonic()
    with socket.create_connection(address, timeout=deadline) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _Reader(sock, started + deadline)
        try:
            if split is not None:
                cuts = (split,) if isinstance(split, int) else split
                for start, end in zip((0, *cuts), (*cuts, len(payload)), strict=True):
                    if start:
                        reader.pump(SPLIT_PAUSE)
                    sock.sendall(payload[start:end])
            elif dribble is None:
                sock.sendall(payload)
            else:
                for index in range(len(payload)):
                    sock.sendall(payload[index : index + 1])
                    reader.pump(dribble)
                    if reader.eof or reader.chunks:
                        break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early; what it said before that is still readable
        reader.pump(deadline)
        elapsed = time.monotonic() - started
    raw = b"".join(reader.chunks)
    responses, trailing, error = parse_responses(raw, eof=reader.eof, methods=methods)
    return Exchange(
        raw=raw,
        eof=reader.eof,
        reset=reader.reset,
        elapsed=elapsed,
        responses=responses,
        trailing=trailing,
        parse_error=error,
    )


def parse_responses(
    raw: bytes, *, eof: bool, methods: Sequence[str] = ()
) -> tuple[tuple[Response, ...], bytes, str | None]:
    """Split `raw` into complete responses: (responses, unparsed trailing bytes, error)."""
    responses: list[Response] = []
    remaining = raw
    while remaining:
        method = methods[len(responses)] if len(responses) < len(methods) else "GET"
        try:
            response, rest = _parse_one(remaining, eof=eof, method=method)
        except h11.ProtocolError as exc:
            return tuple(responses), remaining, f"{type(exc).__name__}: {exc}"
        if response is None:
            return tuple(responses), remaining, "incomplete response"
        responses.append(response)
        remaining = rest
    return tuple(responses), b"", None


def _parse_one(raw: bytes, *, eof: bool, method: str) -> tuple[Response | None, bytes]:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    # h11 only parses a response after it has "sent" a request; the bytes are discarded.
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "conformance")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    if eof:
        conn.receive_data(b"")
    informational: list[int] = []
    head: h11.Response | None = None
    body: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return None, raw
        if isinstance(event, h11.InformationalResponse):
            informational.append(event.status_code)
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            return None, raw
    assert head is not None
    trailing, _closed = conn.trailing_data
    return (
        Response(
            status=head.status_code,
            http_version=head.http_version.decode("ascii"),
            headers=tuple(
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in head.headers
            ),
            body=b"".join(body),
            informational=tuple(informational),
        ),
        bytes(trailing),
    )
