"""h11 as an independent reading of a request stream: what requests it holds.

`h11.Connection(h11.SERVER)` is fed the whole stream and answers each complete request
(a plain 404, which declines any protocol switch it proposed, RFC 9110 §7.8) until
h11 stops: an error, a request after which the connection must close, or the end of the
bytes. h11 is more lenient than Palfrey in a few documented places (it accepts bare LF,
obs-fold, control characters in values, listed Content-Length values, lax chunk lines), so
Palfrey may refuse earlier than h11; what it must never do is serve a request h11 does not
see at that position, or serve it with other headers or another body.

Two differences go the other way, where Palfrey makes a choice the RFCs allow and h11
does not: h11 0.16 refuses an empty line before a request line, which RFC 9112 §2.2 says
a server SHOULD ignore (the reference removes CRLF pairs from h11's buffer before each
request); and h11 closes every HTTP/1.0 connection, while RFC 9112 §9.3 lets a server
keep one open when the request lists `keep-alive` in Connection (the reference goes on
reading with a fresh h11 connection there).
"""

from __future__ import annotations

from dataclasses import dataclass

import h11


@dataclass(frozen=True)
class Expected:
    """One request as the app must see it if Palfrey serves it."""

    method: str
    raw_path: bytes
    query: bytes
    version: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    upgrade: bool  # asks to switch protocols (Palfrey may switch to WebSocket instead)

    def key(self) -> tuple[object, ...]:
        return (self.method, self.raw_path, self.query, self.version, self.headers, self.body)


def scope_target(target: bytes) -> tuple[bytes, bytes]:
    """raw_path and query_string for a request target (RFC 9112 §3.2): the path and query
    of an absolute-form target, a fragment dropped from the query."""
    if not target.startswith(b"/") and b"://" in target:
        rest = target.split(b"://", 1)[1]
        cut = min(
            (i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0),
            default=len(rest),
        )
        target = rest[cut:]
        if not target.startswith(b"/"):
            target = b"/" + target
    path, _, query = target.partition(b"?")
    return path, query.split(b"#", 1)[0]


def normalise_headers(headers: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """Names lower-case; the Transfer-Encoding value lower-case (h11 lowers it, Palfrey
    hands the app the value as sent)."""
    return tuple(
        (name.lower(), value.lower() if name.lower() == b"transfer-encoding" else value)
        for name, value in headers
    )


def read(data: bytes) -> tuple[list[Expected], bool]:
    """The requests h11 finds in `data`, and whether it stopped on an error."""
    found: list[Expected] = []
    while True:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        conn.receive_data(data)
        goes_on, error = _read_connection(conn, found)
        if not goes_on:
            return found, error
        data = bytes(conn.trailing_data[0])


def _read_connection(conn: h11.Connection, found: list[Expected]) -> tuple[bool, bool]:
    """Read requests until h11 stops: (whether an HTTP/1.0 keep-alive request lets the
    stream go on, whether h11 stopped on an error)."""
    request: h11.Request | None = None
    body: list[bytes] = []
    while True:
        if conn.their_state is h11.IDLE:
            _skip_empty_lines(conn)
        elif conn.their_state is h11.MUST_CLOSE:
            # No request may follow in h11, which takes any further byte as an error;
            # after an HTTP/1.0 keep-alive request Palfrey reads on.
            return _keeps_http10_alive(request), False
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return False, True
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return False, False
        if event is h11.PAUSED:
            if not _answer(conn):
                return False, False
            continue
        if isinstance(event, h11.Request):
            request, body = event, []
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            found.append(_expected(request, b"".join(body)))


def _keeps_http10_alive(request: h11.Request | None) -> bool:
    if request is None:
        return False
    options = [
        token.strip().lower()
        for name, value in request.headers
        if name == b"connection"
        for token in bytes(value).split(b",")
    ]
    return request.http_version == b"1.0" and b"keep-alive" in options and b"close" not in options


def _skip_empty_lines(conn: h11.Connection) -> None:
    buffer = conn._receive_buffer._data  # h11 internals: its bytearray of unread bytes
    start = 0
    while buffer.startswith(b"\r\n", start):
        start += 2
    del buffer[:start]


def _answer(conn: h11.Connection) -> bool:
    """Answer the request h11 waits on; False when no further request can follow."""
    if conn.our_state is h11.SEND_RESPONSE:
        # Not 2xx: declines a CONNECT as well as an Upgrade (RFC 9110 §9.3.6, §7.8).
        conn.send(h11.Response(status_code=404, headers=[("content-length", "0")]))
        conn.send(h11.EndOfMessage())
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return True
    return False


def _expected(request: h11.Request, body: bytes) -> Expected:
    version = request.http_version.decode()
    if version.startswith("1.") and version != "1.0":
        version = "1.1"  # RFC 9110 §2.5: Palfrey answers a later 1.x as 1.1
    raw_path, query = scope_target(bytes(request.target))
    headers = tuple((bytes(name), bytes(value)) for name, value in request.headers)
    upgrade = any(name == b"upgrade" for name, _ in headers)
    return Expected(
        request.method.decode(),
        raw_path,
        query,
        version,
        normalise_headers(headers),
        body,
        upgrade,
    )
