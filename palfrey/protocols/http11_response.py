"""HTTP/1.1 response head serialisation, shared by both parser backends (sans-IO).

The hot path of a small response is one `b"".join` over pre-encoded pieces: the status
line comes from a cache, the default headers (Server, Date, configured headers) are one
pre-encoded block whose Date line is rebuilt at most once a second.
"""

from __future__ import annotations

import http
import re
import time
from email.utils import formatdate

from palfrey.protocols.settings import HeaderSettings

# RFC 9110 §5.6.2 tokens. Names the app sends are checked once and remembered.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# CR, LF or NUL in a value would let an app split the response (RFC 9110 §5.5).
_BAD_VALUE = re.compile(rb"[\x00\r\n]").search
# Values checked once and remembered (short ones only: an app's constant header values,
# such as content types, repeat on every response).
_GOOD_VALUES: set[bytes] = set()
_GOOD_VALUES_MAX = 4096
_GOOD_VALUE_LENGTH = 128
_KINDS_MAX = 4096

# What encode_head does with a header name, decided once per spelling (DefaultHeaders.kinds).
_PLAIN, _LENGTH, _CONNECTION, _CODING, _DEFAULT = range(5)
_SPECIAL_KINDS = {
    b"content-length": _LENGTH,
    b"connection": _CONNECTION,
    b"transfer-encoding": _CODING,
}

_STATUS_LINES: dict[tuple[int, bool], bytes] = {}
_STATUS_LINES_11: dict[int, bytes] = {}  # the HTTP/1.1 ones by status alone (the hot path)
_PLAIN_LINES_MAX = 1024

CRLF = b"\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int, http11: bool = True) -> bytes:
    """The encoded status line, reason phrase included (RFC 9112 §4)."""
    try:
        return _STATUS_LINES[status, http11]
    except KeyError:
        pass
    try:
        reason = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    version = b"HTTP/1.1 " if http11 else b"HTTP/1.0 "
    line = version + str(status).encode() + b" " + reason + CRLF
    _STATUS_LINES[status, http11] = line
    if http11:
        _STATUS_LINES_11[status] = line
    return line


class DefaultHeaders:
    """Server, Date and configured headers, added to a response unless the app set them."""

    def __init__(self, settings: HeaderSettings) -> None:
        pairs: list[tuple[bytes, bytes]] = []
        if settings.server_header:
            pairs.append((b"server", b"palfrey"))
        pairs.extend(
            (name.lower().encode("latin-1"), v.encode("latin-1")) for name, v in settings.extra
        )
        self._pairs = pairs
        date_header = self.date_header = settings.date_header
        self.names = frozenset(name for name, _ in pairs) | (
            {b"date"} if date_header else frozenset()
        )
        self._static = b"".join(name + b": " + value + CRLF for name, value in pairs)
        #: Header names an app sent, as spelled, classified for encode_head (checked to
        #: be tokens once, RFC 9110 §5.6.2). Bounded; a name past the bound is re-checked.
        self.kinds: dict[bytes, int] = {}
        #: Ordinary (name, value) pairs an app sent, checked and encoded as header lines
        #: (bounded: emptied when full).
        self.plain_lines: dict[tuple[bytes, bytes], bytes] = {}
        self._second = -1
        self._block = self._static

    def block(self) -> bytes:
        """All default header lines, with the Date of the current second."""
        if self.date_header:
            now = int(time.time())
            if now != self._second:
                self._second = now
                date = formatdate(now, usegmt=True).encode()
                self._block = b"date: " + date + CRLF + self._static
        return self._block

    def block_without(self, names: set[bytes]) -> bytes:
        """The default lines minus those the app already sent."""
        lines = [n + b": " + v + CRLF for n, v in self._pairs if n not in names]
        if self.date_header and b"date" not in names:
            lines.insert(0, self.block()[: self.block().index(CRLF) + 2])
        return b"".join(lines)


class ResponseHead:
    """The outcome of serialising a response head: bytes plus the framing chosen."""

    __slots__ = ("chunked", "content_length", "data", "keep_alive")

    def __init__(
        self, data: bytes, content_length: int | None, chunked: bool, keep_alive: bool
    ) -> None:
        self.data = data
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive


def encode_head(
    status: int,
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...],
    defaults: DefaultHeaders,
    *,
    http11: bool,
    keep_alive: bool,
    body_allowed: bool,
    body_length: int | None,
) -> ResponseHead:
    """Serialise a response head and choose its framing (RFC 9112 §6).

    `body_length` is the length of the whole body when it is known as the head is written
    (the app sent it with the head, or a file), which lets a response without
    Content-Length get one instead of chunked coding. `body_allowed` is
    false for HEAD requests and 1xx/204/304 responses (RFC 9110 §6.4.1).
    """
    return ResponseHead(
        *encode(status, headers, defaults, http11, keep_alive, body_allowed, body_length)
    )


def encode(
    status: int,
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...],
    defaults: DefaultHeaders,
    http11: bool,
    keep_alive: bool,
    body_allowed: bool,
    body_length: int | None,
) -> tuple[bytes, int | None, bool, bool]:
    """encode_head's hot path: (head bytes, content length, chunked, keep-alive)."""
    if not 200 <= status <= 999:
        raise RuntimeError(f"invalid final response status {status!r}")
    line = _STATUS_LINES_11.get(status) if http11 else None
    parts = [line if line is not None else status_line(status, http11)]
    content_length: int | None = None
    transfer_encoding: bytes | None = None
    seen_defaults: set[bytes] | None = None
    kinds = defaults.kinds
    plain = defaults.plain_lines
    for pair in headers:
        try:
            encoded = plain.get(pair)
        except TypeError:  # a list pair or a bytearray: valid, but not a cache key
            encoded = None
        if encoded is not None:
            # An ordinary field the app sent before, already checked and encoded.
            parts.append(encoded)
            continue
        name, value = pair
        try:
            kind = kinds.get(name)
            good = value in _GOOD_VALUES
        except TypeError:
            kind, good = None, False
        if kind is None:
            kind = _classify(name, defaults)
        if not good:
            _check_value(value)
        if not kind:
            if (
                type(pair) is tuple
                and type(name) is bytes
                and type(value) is bytes
                and len(value) <= _GOOD_VALUE_LENGTH
            ):
                if len(plain) >= _PLAIN_LINES_MAX:
                    # Per-response values (request ids) would fill it for good: start over
                    # so the constant fields of the app's responses come back.
                    plain.clear()
                plain[pair] = name + b": " + value + CRLF
        else:
            if kind == _LENGTH:
                content_length = int(value)
            elif kind == _CONNECTION:
                if b"close" in value.lower():
                    keep_alive = False
                    continue  # re-added below in canonical form
            elif kind == _CODING:
                transfer_encoding = value.lower()
            else:
                seen_defaults = seen_defaults or set()
                seen_defaults.add(name.lower())
        parts += (name, b": ", value, CRLF)
    chunked = False
    if transfer_encoding is not None:
        chunked = transfer_encoding == b"chunked"
        if not chunked and body_allowed:
            keep_alive = False  # a coding we cannot delimit: end with the connection
    elif content_length is None and body_allowed:
        if body_length is not None:
            content_length = body_length
            parts += (b"content-length: ", b"%d" % body_length, CRLF)
        elif http11:
            chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            keep_alive = False  # HTTP/1.0: the body ends when the connection does
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif not http11:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(
        defaults.block() if seen_defaults is None else defaults.block_without(seen_defaults)
    )
    parts.append(CRLF)
    return b"".join(parts), content_length, chunked, keep_alive


def _classify(name: bytes, defaults: DefaultHeaders) -> int:
    lname = name.lower()
    if _TOKEN(lname) is None:
        raise RuntimeError(f"invalid HTTP header name {lname!r}")
    kind = _SPECIAL_KINDS.get(lname, _DEFAULT if lname in defaults.names else _PLAIN)
    if type(name) is bytes and len(defaults.kinds) < _KINDS_MAX:
        defaults.kinds[name] = kind
    return kind


def _check_value(value: bytes) -> None:
    if _BAD_VALUE(value) is not None:
        raise RuntimeError(f"invalid HTTP header value {value!r}")
    if (
        type(value) is bytes
        and len(value) <= _GOOD_VALUE_LENGTH
        and len(_GOOD_VALUES) < _GOOD_VALUES_MAX
    ):
        _GOOD_VALUES.add(value)


def error_response(status: int, reason: str, defaults: DefaultHeaders) -> bytes:
    """A complete plain-text error response that closes the connection."""
    body = reason.encode("latin-1", "replace")
    return b"".join(
        (
            status_line(status),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            CRLF,
            b"connection: close\r\n",
            defaults.block(),
            CRLF,
            body,
        )
    )


def chunk(data: bytes) -> bytes:
    """One chunk of chunked transfer coding (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
