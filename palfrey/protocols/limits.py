"""HTTP/1.1 request rules shared by every parser backend (sans-IO).

Parsers differ in what they accept: llhttp (httptools) rejects bad syntax itself but
lets several semantic problems through (no Host, a `gzip, chunked` coding, Transfer-Encoding
on HTTP/1.0), while h11 is strict about semantics but folds obs-fold lines, merges duplicate
Content-Length fields and accepts control characters. Each backend runs the checks its
parser does not, so both answer the same malformed request with the same status, and every
rejection closes the connection (RFC 9112 §11.2: a message with bad framing must not be
followed by a second, smuggled one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from palfrey.protocols.settings import HTTPLimits


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

# RFC 9110 §5.5: field values are visible characters, SP, HTAB and obs-text; any other
# control character (NUL, bare CR or LF, DEL...) is invalid.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
# RFC 9110 §5.6.2: a field name is a token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_DIGITS = re.compile(rb"[0-9]{1,18}").fullmatch
# RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [ ":" port ], no userinfo, path or spaces.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(:[0-9]*)?").fullmatch

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
    if target[:1] == b"/" or (target == b"*" and method == b"OPTIONS"):
        return version
    if target.startswith((b"http://", b"https://")):
        return version  # absolute-form, RFC 9112 §3.2.2
    raise ProtocolError(400, "Invalid request target")


def _check_version(version: str) -> str:
    major, _, minor = version.partition(".")
    if major == "1" and minor.isdigit() and len(minor) == 1:
        return "1.1"  # RFC 9110 §2.5: a later 1.x minor version is answered as 1.1
    if major.isdigit() and len(major) == 1 and major != "0":
        # Includes the HTTP/2 connection preface "PRI * HTTP/2.0" (RFC 9113 §3.4), which
        # only reaches here when HTTP/2 is off.
        raise ProtocolError(505, "HTTP Version Not Supported")
    raise ProtocolError(400, "Unsupported HTTP version")


def check_field_syntax(headers: list[tuple[bytes, bytes]]) -> None:
    """Field names must be tokens and values free of control characters (RFC 9110 §5).

    llhttp enforces this while parsing; h11 lets control characters in values through.
    """
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
    # must ask for "keep-alive" explicitly.
    for option in value.lower().split(b","):
        option = option.strip()
        if option == b"close":
            framing.keep_alive = False
            return
        if option == b"keep-alive":
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


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:([^\r\n]*)", re.IGNORECASE).finditer


def check_partial_head(data: bytes | bytearray, limits: HTTPLimits) -> None:
    """Limits on a request head that has not ended yet (RFC 9112 §2.3, RFC 6585 §5)."""
    if len(data) > limits.max_head_size:
        raise ProtocolError(431, "Request header fields too large")
    if (
        len(data) > limits.max_request_line + 1
        and data.find(b"\n", 0, limits.max_request_line + 2) < 0
    ):
        raise ProtocolError(414, "Request-URI too long")


def check_raw_head(head: bytes, limits: HTTPLimits) -> None:
    """Checks on the raw bytes of a complete head, for parsers that normalise them away.

    h11 unfolds obs-fold lines, accepts bare LF line ends and merges duplicate or listed
    Content-Length values; RFC 9112 §5.2 and §2.2 let a server reject all of these, and
    llhttp does, so the h11 backend rejects them here before h11 sees the head.
    """
    if len(head) > limits.max_head_size:
        raise ProtocolError(431, "Request header fields too large")
    if head.find(b"\r\n") > limits.max_request_line:
        raise ProtocolError(414, "Request-URI too long")
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise ProtocolError(400, "Bare CR or LF in request head")
    if b"\r\n " in head or b"\r\n\t" in head:
        raise ProtocolError(400, "Obsolete line folding is not accepted")
    if crlf - 2 > limits.max_header_count:
        raise ProtocolError(431, "Too many header fields")
    seen = False
    for match in _CONTENT_LENGTH(head):
        if seen:
            raise ProtocolError(400, "Duplicate Content-Length")
        if _DIGITS(match.group(1).strip(b" \t")) is None:
            raise ProtocolError(400, "Invalid Content-Length")
        seen = True
