"""HTTP/1.1 over h11: the pure-Python parser backend.

h11 parses request heads. Request bodies are framed by `http11_chunked` (h11's chunk-line
reader accepts what RFC 9112 §7.1 and llhttp refuse), and responses are serialised by the
shared code in `http11_response` rather than through `h11.Connection.send`: the
pre-encoded defaults and single-write path are the measured difference from a per-event
h11 writer, and both backends then frame messages byte-for-byte alike. Because h11's state
machine never sees our bodies or responses, each head is parsed by a fresh
`h11.Connection`.

h11 normalises a few things llhttp refuses (obs-fold, bare LF, duplicate Content-Length);
`check_raw_head` rejects those on the raw bytes first, so both backends agree.
"""

from __future__ import annotations

import re

import h11

from palfrey.protocols.context import ConnectionContext
from palfrey.protocols.http11_base import HTTP11Connection
from palfrey.protocols.http11_chunked import ChunkedDecoder, LengthDecoder
from palfrey.protocols.limits import (
    ProtocolError,
    check_field_syntax,
    check_partial_head,
    check_raw_head,
    inspect_headers,
)

try:  # h11 >= 0.14 internals; the public Connection API is the fallback.
    from h11._readers import maybe_read_from_IDLE_client as _read_request
    from h11._receivebuffer import ReceiveBuffer as _ReceiveBuffer
except ImportError:  # pragma: no cover
    _read_request = None  # type: ignore[assignment]

_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding", re.IGNORECASE).search


class H11Connection(HTTP11Connection):
    """An HTTP/1.1 connection whose request heads are parsed by h11."""

    def __init__(self, ctx: ConnectionContext) -> None:
        super().__init__(ctx)
        self._slack = ctx.limits.max_head_size + 1024
        self._head = b""  # bytes of a head still arriving
        self._body: ChunkedDecoder | LengthDecoder | None = None

    def head_pending(self) -> bool:
        return bool(self._head)

    def feed(self, data: bytes) -> None:
        while data:
            body = self._body
            if body is None:
                data = self._take_head(data)
                if self.upgrade_request is not None:
                    self.switch_protocol(data)  # RFC 6455 §4.2: the rest is WebSocket
                    return
                continue
            rest = body.feed(data)
            if rest is None:
                return
            self._body = None
            self.on_message_end()
            data = rest

    def _take_head(self, data: bytes) -> bytes:
        """Hold back a head until it is complete, check and parse it; return what follows."""
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
        self._request(_parse_head(head, self._slack))
        return data[end + 4 :]

    def _request(self, event: h11.Request) -> None:
        headers = list(event.headers)
        check_field_syntax(headers)
        version = event.http_version.decode("ascii")
        framing = self.on_head(event.method, event.target, version, headers)
        if framing.chunked:
            limits = self.ctx.limits
            self._body = ChunkedDecoder(
                self.on_body, max_line=limits.max_request_line, max_trailer=limits.max_head_size
            )
        elif framing.content_length:
            self._body = LengthDecoder(self.on_body, framing.content_length)
        else:
            self.on_message_end()  # RFC 9112 §6.3: no body


def _parse_head(head: bytes, slack: int) -> h11.Request:
    """h11's reading of one complete, raw-checked request head. Bodies are framed by
    `http11_chunked`: h11's chunk-line reader is more lenient than llhttp's."""
    try:
        if _read_request is not None:
            # h11's own request reader without its connection state machine, which
            # Palfrey does not use (about a third of h11's cost per request, measured).
            buffer = _ReceiveBuffer()
            buffer += head
            event = _read_request(buffer)
        else:  # pragma: no cover - an h11 without the internal reader
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=slack)
            conn.receive_data(head)
            event = conn.next_event()
    except h11.ProtocolError as exc:
        hint = exc.error_status_hint
        status = hint if 400 <= hint < 500 or hint in (501, 505) else 400
        raise ProtocolError(status, "Invalid HTTP request received.") from None
    if type(event) is not h11.Request:  # pragma: no cover - a complete head is a Request
        raise ProtocolError(400, "Invalid HTTP request received.")
    return event


def _raw_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a raw head (already checked for CRLF-only line ends)."""
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name:
            fields.append((name.lower(), value.strip(b" \t")))
    return fields
