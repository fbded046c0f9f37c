"""HTTP/1.1 over h11: the pure-Python parser backend.

h11 parses request heads and bodies. Responses are serialised by the shared code in
`http11_response` rather than through `h11.Connection.send`: the pre-encoded defaults and
single-write path are the measured difference from a per-event h11 writer, and both
backends then frame responses byte-for-byte alike. Because h11's state machine never sees
our responses, each request gets a fresh `h11.Connection`, fed whatever followed the
previous request.

h11 normalises a few things llhttp refuses (obs-fold, bare LF, duplicate Content-Length);
`check_raw_head` rejects those on the raw bytes first, so both backends agree.
"""

from __future__ import annotations

import re

import h11

from palfrey.protocols.context import ConnectionContext
from palfrey.protocols.http11_base import HTTP11Connection
from palfrey.protocols.limits import (
    ProtocolError,
    check_field_syntax,
    check_partial_head,
    check_raw_head,
    inspect_headers,
)

_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding", re.IGNORECASE).search
_NEED_DATA = h11.NEED_DATA
_PAUSED = h11.PAUSED
_Request = h11.Request
_Data = h11.Data
_EndOfMessage = h11.EndOfMessage


class H11Connection(HTTP11Connection):
    """An HTTP/1.1 connection parsed by h11."""

    def __init__(self, ctx: ConnectionContext) -> None:
        super().__init__(ctx)
        self._slack = ctx.limits.max_head_size + 1024
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._slack)
        self._head = b""  # bytes of a head still arriving
        self._in_body = False

    def head_pending(self) -> bool:
        return bool(self._head)

    def feed(self, data: bytes) -> None:
        while data:
            if not self._in_body:
                data = self._take_head(data)
                if not data:
                    return
            data = self._parse(data)

    def _take_head(self, data: bytes) -> bytes:
        """Hold back a head until it is complete; check it raw; return bytes to parse."""
        if self._head:
            data = self._head + data
            self._head = b""
        elif data[:1] in (b"\r", b"\n"):
            # RFC 9112 §2.2: ignore empty lines before a request line.
            data = data.lstrip(b"\r\n")
        end = data.find(b"\r\n\r\n")
        if end < 0:
            bare = data.find(b"\n\n")
            if bare >= 0:
                check_raw_head(data[: bare + 2], self.ctx.limits)  # raises: bare LF
            check_partial_head(data, self.ctx.limits)
            self._head = data
            return b""
        head = data[: end + 4]
        check_raw_head(head, self.ctx.limits)
        if _TRANSFER_ENCODING(head) is not None:
            # h11 answers every Transfer-Encoding problem with 501; the shared rules tell
            # a malformed field (400) from an unsupported coding (501), as llhttp does.
            inspect_headers(_raw_fields(head), head.find(b"HTTP/1.0\r\n") < 0)
        return data

    def _parse(self, data: bytes) -> bytes:
        """Feed h11 until the request ends; return what follows it."""
        conn = self.conn
        conn.receive_data(data)
        try:
            while True:
                event = conn.next_event()
                if event is _NEED_DATA:
                    return b""
                if type(event) is _Data:
                    self.on_body(bytes(event.data))
                elif type(event) is _Request:
                    self._request(event)
                elif type(event) is _EndOfMessage:
                    rest = conn.trailing_data[0]
                    self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._slack)
                    self._in_body = False
                    self.on_message_end()
                    return rest
                elif event is _PAUSED:
                    return b""
                else:  # ConnectionClosed
                    return b""
        except h11.RemoteProtocolError as exc:
            hint = exc.error_status_hint
            status = hint if 400 <= hint < 500 or hint in (501, 505) else 400
            raise ProtocolError(status, "Invalid HTTP request received.") from None

    def _request(self, event: h11.Request) -> None:
        headers = list(event.headers)
        check_field_syntax(headers)
        self._in_body = True
        version = event.http_version.decode("ascii")
        self.on_head(event.method, event.target, version, headers)


def _raw_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a raw head (already checked for CRLF-only line ends)."""
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name:
            fields.append((name.lower(), value.strip(b" \t")))
    return fields
