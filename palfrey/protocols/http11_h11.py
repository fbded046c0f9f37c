"""HTTP/1.1 over h11: the pure-Python parser backend.

h11 parses each complete request head that the shared framing (`http11_base`) hands it.
Bodies are framed by Palfrey (h11's chunk-line reader accepts what RFC 9112 §7.1 and
llhttp refuse), and responses are serialised by the shared code in `http11_response`
rather than through `h11.Connection.send`: the pre-encoded defaults and single-write path
are the measured difference from a per-event h11 writer, and both backends then frame
messages byte for byte alike.

h11 normalises a few things llhttp refuses: it unfolds obs-fold lines, accepts bare LF,
merges duplicate or listed Content-Length values and accepts control characters in
values. Those heads are refused here (`limits.refusal` picks the status, the same way for
both backends). h11 also lower-cases the Transfer-Encoding value; the app gets the value
as sent, as on httptools.
"""

from __future__ import annotations

import re

import h11

from palfrey.protocols.http11_base import HTTP11Connection, Request
from palfrey.protocols.limits import ProtocolError, check_field_syntax, refusal

try:  # h11 >= 0.14 internals; the public Connection API is the fallback.
    from h11._readers import maybe_read_from_IDLE_client as _read_request
    from h11._receivebuffer import ReceiveBuffer as _ReceiveBuffer
except ImportError:  # pragma: no cover
    _read_request = None  # type: ignore[assignment]

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:([^\r\n]*)", re.IGNORECASE).finditer
_DIGITS = re.compile(rb"[ \t]*[0-9]+[ \t]*").fullmatch
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:[ \t]*([^\r\n]*)", re.IGNORECASE).search


class H11Connection(HTTP11Connection):
    """An HTTP/1.1 connection whose request heads are parsed by h11."""

    def parse_head(self, head: bytes, eol: int) -> Request:
        if not _h11_reads_it_raw(head):
            raise refusal(head, self.ctx.limits)
        try:
            event = _parse_head(head, self.ctx.limits.max_head_size)
            headers = list(event.headers)
            check_field_syntax(headers)  # h11 accepts control characters in values
        except (h11.ProtocolError, ProtocolError):
            raise refusal(head, self.ctx.limits) from None
        coding = _TRANSFER_ENCODING(head)
        if coding is not None:
            _restore_transfer_encoding(headers, coding.group(1).rstrip(b" \t"))
        return event.method, event.target, event.http_version.decode("ascii"), headers


def _h11_reads_it_raw(head: bytes) -> bool:
    """False for a head h11 would change before Palfrey sees it (RFC 9112 §2.2 bare CR or
    LF, §5.2 obs-fold, RFC 9110 §8.6 a repeated or listed Content-Length)."""
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return False
    if b"\r\n " in head or b"\r\n\t" in head:
        return False
    seen = False
    for match in _CONTENT_LENGTH(head):
        if seen or _DIGITS(match.group(1)) is None:
            return False
        seen = True
    return True


def _restore_transfer_encoding(headers: list[tuple[bytes, bytes]], value: bytes) -> None:
    """h11 hands on the value lower-cased; the app gets it as sent (there is one such
    field: h11 refuses a second)."""
    headers[:] = [(name, value if name == b"transfer-encoding" else old) for name, old in headers]


def _parse_head(head: bytes, slack: int) -> h11.Request:
    """h11's reading of one complete, raw-checked request head. Raises h11.ProtocolError."""
    if _read_request is not None:
        # h11's own request reader without its connection state machine, which
        # Palfrey does not use (about a third of h11's cost per request, measured).
        buffer = _ReceiveBuffer()
        buffer += head
        event = _read_request(buffer)
    else:  # pragma: no cover - an h11 without the internal reader
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=slack + 1024)
        conn.receive_data(head)
        event = conn.next_event()
    if type(event) is not h11.Request:  # pragma: no cover - a complete head is a Request
        raise h11.RemoteProtocolError("incomplete request head")
    return event
