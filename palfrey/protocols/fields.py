"""Header field rules shared by HTTP/2 and HTTP/3: both carry HTTP semantics in header
sections with the same pseudo-header and field rules (RFC 9113 §8.2-8.3, RFC 9114
§4.2-4.3), so a request is checked, and a response built, the same way on both.

Sans-IO and library-free: the h2 and aioquic modules both use it, and neither library is
needed by the other's users.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "CONNECTION_SPECIFIC",
    "Request",
    "check_name",
    "default_fields",
    "lower_fields",
    "parse_request",
    "response_fields",
    "subprotocols",
]

_STATUS: dict[int, bytes] = {}
# RFC 9113 §8.2.2: connection-specific fields are malformed in HTTP/2.
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# RFC 9113 §8.2.1: lower-case tokens; values without NUL, CR, LF or edge whitespace.
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+").fullmatch
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$").search
_BAD_OUT_VALUE = re.compile(rb"[\x00\r\n]").search
_KNOWN_NAMES: set[bytes] = set()
_GOOD_VALUES: set[bytes] = set()  # request field values already checked (bounded)


class Request:
    """The checked fields of a request HEADERS block."""

    __slots__ = ("authority", "content_length", "headers", "method", "path", "protocol", "scheme")

    def __init__(
        self,
        *,
        method: bytes,
        scheme: bytes,
        path: bytes,
        authority: bytes | None,
        protocol: bytes | None,
        headers: list[tuple[bytes, bytes]],
        content_length: int | None,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.path = path
        self.authority = authority
        self.protocol = protocol
        self.headers = headers
        self.content_length = content_length


def parse_request(fields: Iterable[tuple[bytes, bytes]], connect_protocol: bool) -> Request | None:
    """The request in a HEADERS block, or None when it is malformed (RFC 9113 §8.1.1):
    pseudo-header rules of §8.3.1, field rules of §8.2; RFC 8441 §4 for `:protocol`."""
    method = scheme = path = authority = protocol = None
    headers: list[tuple[bytes, bytes]] = []
    host = False
    cookies = 0
    length: bytes | None = None
    for name, value in fields:
        if name[:1] == b":":
            if headers:
                return None  # §8.3: pseudo-header fields come first
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            elif name == b":protocol" and protocol is None and connect_protocol:
                protocol = value
            else:
                return None  # unknown, duplicated or response pseudo-header
            continue
        if name not in _KNOWN_NAMES and not good_name(name):
            return None
        if value not in _GOOD_VALUES and bad_value(value):
            return None
        if name in CONNECTION_SPECIFIC:
            return None
        if name == b"te":
            if value != b"trailers":
                return None
        elif name == b"host":
            host = True
        elif name == b"cookie":
            cookies += 1
        elif name == b"content-length":
            if (length is not None and value != length) or not value.isdigit():
                return None
            length = value
        headers.append((name, value))
    if method is None:
        return None
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None or authority is None:
            return None  # §8.5
        path = scheme = b""
    elif scheme is None or not path:
        return None
    elif protocol is not None and (method != b"CONNECT" or authority is None):
        return None  # RFC 8441 §4
    elif path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        return None  # §8.3.1
    if not host and authority is not None:
        # ASGI: `:authority` is presented as the Host field.
        headers.insert(0, (b"host", authority))
    if cookies > 1:
        # §8.2.3: split cookie fields are joined before reaching an application.
        joined = b"; ".join(v for n, v in headers if n == b"cookie")
        headers = [(n, v) for n, v in headers if n != b"cookie"]
        headers.append((b"cookie", joined))
    return Request(
        method=method,
        scheme=scheme,
        path=path,
        authority=authority,
        protocol=protocol,
        headers=headers,
        content_length=None if length is None else int(length),
    )


def good_name(name: bytes) -> bool:
    """Whether a request field name is a lower-case token (§8.2.1); remembered if so."""
    if _NAME(name) is None:
        return False
    if len(_KNOWN_NAMES) < 4096:
        _KNOWN_NAMES.add(name)
    return True


def bad_value(value: bytes) -> bool:
    """Whether a request field value breaks §8.2.1; good short ones are remembered (the
    same values come on every request of a client, and HPACK hands back the same
    objects, so the set lookup is cheaper than the regex)."""
    if _BAD_VALUE(value) is not None:
        return True
    if len(value) <= 256 and len(_GOOD_VALUES) < 2048:
        _GOOD_VALUES.add(value)
    return False


def check_name(name: bytes) -> bytes:
    lowered = name.lower()
    if _NAME(lowered) is None:
        raise RuntimeError(f"Invalid HTTP header name {name!r}")
    if len(_KNOWN_NAMES) < 4096:
        _KNOWN_NAMES.add(lowered)
    return lowered


def lower_fields(headers: Any) -> list[tuple[bytes, bytes]]:
    fields = []
    for name, value in headers:
        lowered = check_name(name)
        if lowered not in CONNECTION_SPECIFIC:
            fields.append((lowered, value))
    return fields


_DEFAULTS_CACHE: dict[int, tuple[bytes, list[tuple[bytes, bytes]]]] = {}


def default_fields(defaults: Any, seen: set[bytes] | None) -> list[tuple[bytes, bytes]]:
    """The server's default fields (Server, Date, configured ones) as pairs, parsed from
    the HTTP/1.1 block, which changes at most once a second."""
    block = defaults.block()
    cached = _DEFAULTS_CACHE.get(id(defaults))
    if cached is None or cached[0] is not block:
        pairs = []
        for line in block.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                pairs.append((name, value))
        cached = _DEFAULTS_CACHE[id(defaults)] = (block, pairs)
    if seen is None:
        return cached[1]
    return [(n, v) for n, v in cached[1] if n not in seen]


def subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    found: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            found.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    return found


def response_fields(defaults: Any, status: int, headers: Any) -> list[tuple[bytes, bytes]]:
    """A response header section for HTTP/2 and HTTP/3: `:status`, the app's fields
    lower-cased without the connection-specific ones (RFC 9113 §8.2.2, RFC 9114 §4.2),
    then the server's defaults (`DefaultHeaders`)."""
    code = _STATUS.get(status)
    if code is None:
        code = _STATUS[status] = str(status).encode()
    fields = [(b":status", code)]
    names = defaults.names
    seen: set[bytes] | None = None
    for name, value in headers:
        if name not in _KNOWN_NAMES:
            name = check_name(name)
        if name in CONNECTION_SPECIFIC:
            continue
        if _BAD_OUT_VALUE(value) is not None:
            raise RuntimeError(f"Invalid HTTP header value {value!r}")
        if name in names:
            seen = seen or set()
            seen.add(name)
        fields.append((name, value))
    fields.extend(default_fields(defaults, seen))
    return fields
