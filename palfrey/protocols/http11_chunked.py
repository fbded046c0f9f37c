"""Request body framing decoded by Palfrey itself (sans-IO): chunked and Content-Length.

h11 accepts chunk lines llhttp refuses (a space after the size, a bare CR in an extension,
a bare LF in a trailer: its chunk-line pattern is `[0-9A-Fa-f]{1,20}(;.*)?[ \\t]*\\r\\n`)
and takes 20 hex digits, so a size of 2**64 leaves the connection waiting for exabytes.
The h11 backend therefore lets h11 parse request heads only and frames bodies here, with
the grammar llhttp enforces, so both backends accept and refuse the same bodies. The
httptools backend uses the same decoder in the one case llhttp cannot frame: a
`Transfer-Encoding: chunked` whose value ends in HTAB (valid OWS, RFC 9110 §5.5).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from palfrey.protocols.limits import ProtocolError

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# RFC 9110 §5.6.4 quoted-string: qdtext / quoted-pair.
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 §7.1.1 chunk-ext, without the optional BWS (llhttp refuses it too).
_CHUNK_EXT = re.compile(rb"(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(;[^\r\n]*)?\r\n").fullmatch
_EXT_OK = _CHUNK_EXT.fullmatch
# RFC 9112 §7.1.2 / RFC 9110 §5.1, §5.5: trailer fields are `token ":" OWS value OWS`
# with no control characters besides HTAB.
_FIELD = re.compile(_TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n").fullmatch
_MAX_SIZE = 1 << 64  # sizes that do not fit 64 bits are refused (RFC 9112 §7.1: overflow)

_SIZE, _DATA, _DATA_END, _TRAILER = 0, 1, 2, 3


class ChunkedDecoder:
    """Decodes one chunked request body (RFC 9112 §7.1); trailers are checked, then
    dropped (ASGI has no request trailers)."""

    __slots__ = (
        "_buffer",
        "_emit",
        "_max_line",
        "_max_trailer",
        "_remaining",
        "_state",
        "_trailer",
    )

    def __init__(self, emit: Callable[[bytes], None], *, max_line: int, max_trailer: int) -> None:
        self._emit = emit
        self._max_line = max_line
        self._max_trailer = max_trailer
        self._state = _SIZE
        self._remaining = 0
        self._buffer = b""  # an incomplete chunk line, data CRLF or trailer line
        self._trailer = 0

    def feed(self, data: bytes) -> bytes | None:
        """Decode `data`; return None while the body continues, else the bytes after it."""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                self._emit(data[pos : pos + take] if pos or take < end else data)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            if state == _DATA_END:
                need = 2 - len(self._buffer)
                self._buffer += data[pos : pos + need]
                pos += need
                if len(self._buffer) < 2:
                    return None
                if self._buffer != b"\r\n":
                    raise ProtocolError(400, "Invalid chunk: data not followed by CRLF")
                self._buffer = b""
                self._state = _SIZE
                continue
            line, pos = self._line(data, pos)
            if line is None:
                return None
            if state == _SIZE:
                self._size_line(line)
            elif line == b"\r\n":
                return data[pos:]  # the empty line ending the trailer section
            else:
                self._trailer_line(line)
        return None

    def _line(self, data: bytes, pos: int) -> tuple[bytes | None, int]:
        """The next complete line (with its LF) from `pos`, buffering a partial one."""
        limit = self._max_line if self._state == _SIZE else self._max_trailer
        newline = data.find(b"\n", pos)
        if newline < 0:
            self._buffer += data[pos:]
            if len(self._buffer) > limit:
                raise _too_long(self._state)
            return None, len(data)
        line = data[pos : newline + 1]
        if self._buffer:
            line, self._buffer = self._buffer + line, b""
        if len(line) > limit:
            raise _too_long(self._state)
        return line, newline + 1

    def _size_line(self, line: bytes) -> None:
        # chunk = chunk-size [ chunk-ext ] CRLF; chunk-size = 1*HEXDIG (RFC 9112 §7.1)
        match = _CHUNK_LINE(line)
        if match is None:
            raise ProtocolError(400, "Invalid chunk size line")
        ext = match.group(2)
        if ext is not None and _EXT_OK(ext) is None:
            raise ProtocolError(400, "Invalid chunk extension")
        size = int(match.group(1), 16)
        if size >= _MAX_SIZE:
            raise ProtocolError(400, "Chunk size too large")
        if size:
            self._remaining = size
            self._state = _DATA
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        self._trailer += len(line)
        if self._trailer > self._max_trailer:
            raise ProtocolError(431, "Request trailer fields too large")
        if _FIELD(line) is None:
            # A bare CR, obs-fold, a space before the colon or an invalid name/value.
            raise ProtocolError(400, "Invalid trailer field")


def _too_long(state: int) -> ProtocolError:
    if state == _SIZE:
        return ProtocolError(400, "Chunk size line too long")
    return ProtocolError(431, "Request trailer fields too large")


class LengthDecoder:
    """A body of exactly `length` bytes (Content-Length, RFC 9112 §6.2)."""

    __slots__ = ("_emit", "_remaining")

    def __init__(self, emit: Callable[[bytes], None], length: int) -> None:
        self._emit = emit
        self._remaining = length

    def feed(self, data: bytes) -> bytes | None:
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            self._emit(data)
            return None
        self._remaining = 0
        if len(data) == remaining:
            self._emit(data)
            return b""
        self._emit(data[:remaining])
        return data[remaining:]
