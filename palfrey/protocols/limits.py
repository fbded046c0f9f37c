"""HTTP/1.1 request rules shared by every parser backend (sans-IO).

Both backends go through the same steps (`http11_base`): Palfrey finds where each request
head ends, checks what can be checked on raw bytes as they arrive (`HeadScanner`), hands
the complete head to the backend's parser, then reads the framing fields
(`inspect_headers`) and frames the body itself (`http11_chunked`). A parser that refuses a
head, or a check that fails, never picks the status itself: `refusal` does, from the raw
head, by the rule below, so both backends answer the same malformed request with the same
status however its bytes were split into reads.

The rule: the problem at the earliest byte position wins. A problem's position is the
first byte at which the bytes received so far can no longer be the start of a valid head
(a bare LF at its own position, a bare CR at the byte after it, a bad request line at its
LF, a head over the size limit at the first byte too many). A check on a partial head and
the check of the complete head therefore always agree. Problems only a complete head
shows (field syntax, then framing and Host) come after all of these, in that order.
Every refusal closes the connection (RFC 9112 §11.2: after a message with bad framing,
a second, smuggled one must never be read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from palfrey.protocols.settings import HTTPLimits
from palfrey.protocols.tokens import tokens


class ProtocolError(Exception):
    """A request the server must refuse: answered with `status`, then the connection closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# The methods llhttp knows (httptools cannot parse any other), so h11 serves the same set.
KNOWN_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND "
    b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
    b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE "
    b"QUERY".split()
)

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# RFC 9110 §5.5: field values are visible characters, SP, HTAB and obs-text; any other
# control character (NUL, bare CR or LF, DEL...) is invalid.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
# RFC 9110 §5.6.2: a field name is a token.
_TOKEN = re.compile(_TCHAR + rb"+").fullmatch
_DIGITS = re.compile(rb"[0-9]{1,18}").fullmatch
# RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [ ":" port ], no userinfo, path or spaces.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(:[0-9]*)?").fullmatch
# RFC 9112 §3: request-line = method SP request-target SP HTTP-version, one SP each;
# method = token (RFC 9110 §9.1); the target holds visible US-ASCII only (RFC 9112 §3.2,
# RFC 3986 §2); HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3).
_REQUEST_LINE = re.compile(_TCHAR + rb"+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]").fullmatch
# RFC 9112 §2.2: a bare CR (not followed by LF) or a bare LF (not preceded by CR).
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n").search
# RFC 9112 §5.2 obs-fold, or whitespace before the first field (§2.2): a line that
# starts with SP or HTAB.
_FOLD = re.compile(rb"\r\n[ \t]").search

_GOOD_HOSTS: set[bytes] = set()
_GOOD_HOSTS_MAX = 1024

_SPECIAL = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade")
)


@dataclass(slots=True)
class Framing:
    """How the request body is delimited and what the client asked of the connection."""

    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False
    #: An Upgrade field is present (RFC 9110 §7.8): worth a look for a WebSocket request.
    upgrade: bool = False


# -- the request line --------------------------------------------------------------


def request_line_problem(line: bytes) -> ProtocolError | None:
    """What is wrong with a complete request line (CRLF excluded), if anything."""
    if _REQUEST_LINE(line) is None:
        # RFC 9112 §3: an invalid request-line SHOULD get 400. A method that is a token
        # but unknown only gets 501 when the line is otherwise valid (RFC 9110 §9.1).
        return ProtocolError(400, "Invalid request line")
    method, target, version = line.split(b" ")
    try:
        check_request_line(method, target, version[5:].decode("ascii"))
    except ProtocolError as exc:
        return exc
    return None


def check_request_line(method: bytes, target: bytes, version: str) -> str:
    """Raise ProtocolError for a request line the server will not serve; return the
    HTTP version to answer with."""
    if version not in ("1.1", "1.0"):
        version = _check_version(version)
    if method not in KNOWN_METHODS:
        if _TOKEN(method) is None:
            raise ProtocolError(400, "Invalid HTTP method")
        # RFC 9110 §9.1: an unrecognised method SHOULD get 501.
        raise ProtocolError(501, "Method Not Implemented")
    if method == b"CONNECT":
        # Palfrey is not a forward proxy (RFC 9110 §9.3.6).
        raise ProtocolError(405, "CONNECT is not supported")
    if b"#" in target:
        # RFC 9112 §3.2: no request-target form has a fragment (origin-form is
        # absolute-path [ "?" query ], absolute-form an absolute-URI).
        raise ProtocolError(400, "Fragment in request target")
    if target[:1] == b"/" or (target == b"*" and method == b"OPTIONS"):
        return version
    if _absolute_form(target):
        return version
    raise ProtocolError(400, "Invalid request target")


def _absolute_form(target: bytes) -> bool:
    """An http(s) absolute-form target (RFC 9112 §3.2.2) with a valid authority: RFC 9110
    §4.2.1 (an empty host MUST be rejected), §4.2.4 (userinfo: treat as an error), RFC 3986
    §3.2.2 (an IP literal is closed by "]")."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return False
    # The host is never empty: _HOST needs at least one character (or a closed "[...]").
    return _HOST(rest[: _authority_end(rest)]) is not None


def _authority_end(rest: bytes) -> int:
    """Where the authority after "scheme://" ends (RFC 3986 §3.2; a target has no "#")."""
    end = len(rest)
    for delimiter in (b"/", b"?"):
        found = rest.find(delimiter, 0, end)
        if found >= 0:
            end = found
    return end


def origin_form(target: bytes) -> bytes:
    """The path and query of an absolute-form or asterisk-form target (RFC 9112 §3.2)."""
    if target == b"*":
        return target
    rest = target.partition(b"://")[2]
    path = rest[_authority_end(rest) :]
    return path if path[:1] == b"/" else b"/" + path


def _check_version(version: str) -> str:
    major, _, minor = version.partition(".")
    if major == "1" and minor.isdigit() and len(minor) == 1:
        return "1.1"  # RFC 9110 §2.5: a later 1.x minor version is answered as 1.1
    if major.isdigit() and len(major) == 1 and major != "0":
        # Includes the HTTP/2 connection preface "PRI * HTTP/2.0" (RFC 9113 §3.4), which
        # only reaches here when HTTP/2 is off.
        raise ProtocolError(505, "HTTP Version Not Supported")
    raise ProtocolError(400, "Unsupported HTTP version")


# -- heads as they arrive -----------------------------------------------------------


class HeadScanner:
    """The bytes of one request head while it arrives, checked as they come: every
    problem a prefix of a head can show is found at the read that brings it, not when
    the head ends (or the head-read timeout fires). See the module docstring for the
    order. Each read is scanned once (bytes before `_scanned` are known to be clean)."""

    __slots__ = ("_crlfs", "_limits", "_scanned", "buffer", "started")

    def __init__(self, limits: HTTPLimits) -> None:
        self._limits = limits
        self.buffer = bytearray()
        self.started = False  # a byte of the request line has arrived
        self._scanned = 0
        self._crlfs = 0  # CRLFs in buffer[:_scanned]

    def feed(self, data: bytes) -> int:
        """Add a read; return the length of the complete head (CRLF CRLF included) now
        held in `buffer`, or -1 while it is incomplete. Raises the earliest problem."""
        buffer = self.buffer
        start = self._scanned
        buffer += data
        if not self.started and not self._skip_empty_lines():
            return -1
        end = buffer.find(b"\r\n\r\n", max(start - 3, 0))
        stop = end + 4 if end >= 0 else len(buffer)
        problem = self.problem(stop)
        if problem is not None:
            raise problem
        return stop if end >= 0 else -1

    def _skip_empty_lines(self) -> bool:
        """RFC 9112 §2.2: empty lines (CRLF) before a request line are ignored; any other
        CR or LF there is not a request line (400). True once the line has begun."""
        buffer = self.buffer
        start = 0
        while buffer.startswith(b"\r\n", start):
            start += 2
        del buffer[:start]
        if not buffer or buffer == b"\r":
            return False  # nothing yet, or a CR whose LF may come in the next read
        if buffer[0] in (10, 13):
            raise ProtocolError(400, "Bare CR or LF before the request line")
        self.started = True
        return True

    def problem(self, stop: int) -> ProtocolError | None:
        """The earliest problem in `buffer[:stop]`; `buffer[:_scanned]` was clean."""
        buffer, limits = self.buffer, self._limits
        start, self._scanned = self._scanned, stop
        found: list[tuple[int, ProtocolError]] = []
        # A CR at the very end may still be followed by LF in the next read.
        tail = stop - 1 if buffer[stop - 1 : stop] == b"\r" else stop
        bare = _BARE_CR_OR_LF(buffer, max(start - 1, 0), tail)
        if bare is not None:
            at = bare.start()
            found.append(
                (at + (buffer[at] == 13), ProtocolError(400, "Bare CR or LF in request head"))
            )
        fold = _FOLD(buffer, max(start - 2, 0), stop)
        if fold is not None:
            found.append(
                (fold.start() + 2, ProtocolError(400, "Obsolete line folding is not accepted"))
            )
        found += self._line_problem(stop)
        if stop > limits.max_head_size:
            found.append(
                (limits.max_head_size, ProtocolError(431, "Request header fields too large"))
            )
        found += self._count_problem(start, stop)
        if not found:
            return None
        return min(found, key=lambda item: item[0])[1]  # earliest; ties: the order above

    def _line_problem(self, stop: int) -> list[tuple[int, ProtocolError]]:
        buffer, max_line = self.buffer, self._limits.max_request_line
        eol = buffer.find(b"\r\n", 0, min(stop, max_line + 2))
        if eol < 0:
            if stop >= max_line + 2:  # RFC 9112 §3: a line longer than the server reads
                return [(max_line + 1, ProtocolError(414, "Request-URI too long"))]
            return []
        problem = request_line_problem(bytes(buffer[:eol]))
        return [] if problem is None else [(eol + 1, problem)]

    def _count_problem(self, start: int, stop: int) -> list[tuple[int, ProtocolError]]:
        # Lines end with CRLF: request line + fields (+ the empty line of a complete
        # head). The field past the limit shows at its own CRLF (RFC 6585 §5).
        buffer, allowed = self.buffer, self._limits.max_header_count + 1
        first = max(start - 1, 0)
        self._crlfs += buffer.count(b"\r\n", first, stop)
        crlfs = self._crlfs
        if crlfs <= allowed or (buffer[stop - 4 : stop] == b"\r\n\r\n" and crlfs == allowed + 1):
            return []
        at = -2
        for _ in range(allowed + 1):
            at = buffer.find(b"\r\n", at + 2, stop)
        return [(at + 1, ProtocolError(431, "Too many header fields"))]


def refusal(head: bytes, limits: HTTPLimits) -> ProtocolError:
    """The answer to a complete head that a parser refused or a check failed on: the
    one place that picks the status, for both backends (module docstring)."""
    scanner = HeadScanner(limits)
    scanner.buffer += head
    problem = scanner.problem(len(head))
    if problem is not None:
        return problem
    fields = raw_fields(head)
    if fields is None:
        return ProtocolError(400, "Invalid header field")
    eol = head.find(b"\r\n")
    try:
        check_field_syntax(fields)
        inspect_headers(fields, head[eol - 3 : eol] != b"1.0")  # the line is valid here
    except ProtocolError as exc:
        return exc
    return ProtocolError(400, "Invalid HTTP request received.")


def raw_fields(head: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of a complete head with no bare CR/LF or obs-fold, names lower-cased,
    values without OWS (RFC 9112 §5); None when a line has no colon."""
    fields = []
    for line in head[head.find(b"\r\n") + 2 : -4].split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


# -- fields --------------------------------------------------------------------------


def check_field_syntax(headers: list[tuple[bytes, bytes]]) -> None:
    """Field names must be tokens (no whitespace before the colon, RFC 9112 §5.1) and
    values free of control characters (RFC 9110 §5.5)."""
    for name, value in headers:
        if _TOKEN(name) is None:
            raise ProtocolError(400, "Invalid header name")
        if _BAD_VALUE(value) is not None:
            raise ProtocolError(400, "Invalid header value")


def inspect_headers(headers: list[tuple[bytes, bytes]], http11: bool) -> Framing:
    """Read the framing and connection fields of a request (names already lower-case).

    Raises ProtocolError for ambiguous framing: RFC 9112 §6.1 (Transfer-Encoding with
    Content-Length, unknown codings, Transfer-Encoding on HTTP/1.0), §6.3 (duplicate or
    invalid Content-Length) and §3.2 (a missing or repeated Host on HTTP/1.1).
    """
    framing = Framing(None, False, http11)
    hosts = 0
    transfer_encoding: bytes | None = None
    for name, value in headers:
        if name not in _SPECIAL:
            continue
        if name == b"host":
            hosts += 1
            if value not in _GOOD_HOSTS:
                _check_host(value)
        elif name == b"content-length":
            if framing.content_length is not None:
                raise ProtocolError(400, "Duplicate Content-Length")
            if _DIGITS(value) is None:
                value = value.strip(b" \t")  # OWS around the value (RFC 9110 §5.5)
                if _DIGITS(value) is None:
                    raise ProtocolError(400, "Invalid Content-Length")
            framing.content_length = int(value)
        elif name == b"transfer-encoding":
            if transfer_encoding is not None:
                raise ProtocolError(400, "Duplicate Transfer-Encoding")
            transfer_encoding = value
        elif name == b"connection":
            _connection_options(framing, value)
        elif name == b"upgrade":
            framing.upgrade = True
        elif value.lower() == b"100-continue":  # Expect
            framing.expect_continue = http11
    if hosts > 1 or (http11 and hosts == 0):
        raise ProtocolError(400, "A request needs exactly one Host header")
    if transfer_encoding is not None:
        _check_transfer_encoding(framing, transfer_encoding, http11)
    return framing


def _check_host(value: bytes) -> None:
    if value and _HOST(value) is None:
        raise ProtocolError(400, "Invalid Host header")
    # A server sees few distinct Host values: remember valid ones (bounded).
    if len(_GOOD_HOSTS) < _GOOD_HOSTS_MAX and type(value) is bytes:
        _GOOD_HOSTS.add(value)


def _connection_options(framing: Framing, value: bytes) -> None:
    # RFC 9112 §9.3: "close" ends the connection after this response; HTTP/1.0 clients
    # must ask for "keep-alive" explicitly. Connection is a token list (RFC 9110 §7.6.1).
    options = tokens(value)
    if b"close" in options:
        framing.keep_alive = False
    elif b"keep-alive" in options:
        framing.keep_alive = True


def _check_transfer_encoding(framing: Framing, value: bytes, http11: bool) -> None:
    if not http11:
        # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
        raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
    if framing.content_length is not None:
        raise ProtocolError(400, "Content-Length with Transfer-Encoding")
    value = value.strip(b" \t").lower()
    if value != b"chunked":
        codings = [coding.strip(b" \t") for coding in value.split(b",")]
        if codings[-1] == b"chunked" and all(
            _TOKEN(coding) is not None and coding != b"chunked" for coding in codings[:-1]
        ):
            # Well-formed, but Palfrey decodes no coding besides chunked (§6.1: 501).
            raise ProtocolError(501, "Unsupported Transfer-Encoding")
        # A typo or an obfuscated "chunked" cannot be framed safely.
        raise ProtocolError(400, "Invalid Transfer-Encoding")
    framing.chunked = True
