"""HTTP/2 field rules (RFC 9113 §8.2, §8.3): request header blocks checked into a
`Request`, trailers checked, response fields lower-cased, checked and HPACK-encoded.

Sans-IO. A malformed request is a stream error of type PROTOCOL_ERROR (§8.1.1); a bad
field from the application is a RuntimeError in its `send`, as on HTTP/1.1.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any

from palfrey.protocols.http2_hpack import Encoder
from palfrey.protocols.http11_response import DefaultHeaders

__all__ = ["Request", "parse_request", "response_block", "trailers_ok"]

# §8.2.2: connection-specific fields are malformed in HTTP/2.
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# §8.2.1: lower-case tokens; values without NUL, CR, LF or edge whitespace.
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+").fullmatch
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$").search
_BAD_OUT_VALUE = re.compile(rb"[\x00\r\n]").search
_KNOWN_NAMES: set[bytes] = set()  # lower-case token names already checked (bounded)
_GOOD_VALUES: set[bytes] = set()  # request field values already checked (bounded)

ENCODER = Encoder()
"""Response fields are encoded without a dynamic table, so one encoder serves all."""


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
    """The request in a HEADERS block, or None when it is malformed (§8.1.1): pseudo-header
    rules of §8.3.1, field rules of §8.2; RFC 8441 §4 for `:protocol`."""
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
        if not _field_ok(name, value):
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
    return _request(method, scheme, path, authority, protocol, headers, host, cookies, length)


def _request(
    method: bytes | None,
    scheme: bytes | None,
    path: bytes | None,
    authority: bytes | None,
    protocol: bytes | None,
    headers: list[tuple[bytes, bytes]],
    host: bool,
    cookies: int,
    length: bytes | None,
) -> Request | None:
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


def trailers_ok(fields: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's trailer section is well-formed: no pseudo-header (§8.1) and
    valid, non-connection-specific fields (§8.2)."""
    return all(name[:1] != b":" and _field_ok(name, value) for name, value in fields)


def _field_ok(name: bytes, value: bytes) -> bool:
    if name not in _KNOWN_NAMES:
        if _NAME(name) is None:
            return False
        if len(_KNOWN_NAMES) < 4096:
            _KNOWN_NAMES.add(name)
    if value not in _GOOD_VALUES:
        # Good short values are remembered: a client sends the same ones on every
        # request, so the set lookup is cheaper than the regex.
        if _BAD_VALUE(value) is not None:
            return False
        if len(value) <= 256 and len(_GOOD_VALUES) < 2048:
            _GOOD_VALUES.add(value)
    return name not in CONNECTION_SPECIFIC


# -- response fields -----------------------------------------------------------------------

# Per server (its defaults), the app field pairs already checked and encoded, as the app
# spelled them (bounded): the constant fields of an app's responses cost a lookup each.
_PLAIN: dict[DefaultHeaders, dict[tuple[bytes, bytes], bytes]] = {}
_PLAIN_MAX = 1024
_SKIP = b""  # a connection-specific field: dropped (§8.2.2)
_DEFAULT_BLOCKS: dict[int, tuple[bytes, bytes]] = {}


def response_block(status: int, headers: Any, defaults: DefaultHeaders) -> bytes:
    """The HPACK block of a response: `:status`, the app's fields lower-cased without
    connection-specific ones (§8.2.2), then the server's defaults not already sent."""
    if not 200 <= status <= 999:
        raise RuntimeError(f"invalid final response status {status!r}")  # as on HTTP/1.1
    parts = [ENCODER.status(status)]
    plain = _PLAIN.get(defaults)
    if plain is None:
        plain = _PLAIN[defaults] = {}
    seen: set[bytes] | None = None
    for pair in headers:
        try:
            encoded = plain.get(pair)
        except TypeError:  # a list pair or a bytearray: valid, but not a cache key
            encoded = None
        if encoded is None:
            name, value = pair
            lowered = check_name(name)
            if _BAD_OUT_VALUE(value) is not None:
                raise RuntimeError(f"Invalid HTTP header value {value!r}")
            if lowered in defaults.names:
                seen = seen or set()
                seen.add(lowered)
                encoded = ENCODER.field(lowered, bytes(value))
            else:
                encoded = _plain(plain, pair, lowered, value)
        parts.append(encoded)
    parts.append(_defaults(defaults, seen))
    return b"".join(parts)


def _plain(plain: dict[Any, bytes], pair: Any, name: bytes, value: Any) -> bytes:
    encoded = _SKIP if name in CONNECTION_SPECIFIC else ENCODER.field(name, bytes(value))
    if type(pair) is tuple and type(pair[0]) is bytes and type(value) is bytes:
        if len(plain) >= _PLAIN_MAX:
            plain.clear()
        plain[pair] = encoded
    return encoded


def _defaults(defaults: DefaultHeaders, seen: set[bytes] | None) -> bytes:
    """The encoded default fields (Server, Date, configured ones), derived from the
    HTTP/1.1 block, which changes at most once a second."""
    block = defaults.block()
    cached = _DEFAULT_BLOCKS.get(id(defaults))
    if cached is None or cached[0] is not block or seen is not None:
        pairs = []
        for line in block.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                if seen is None or name not in seen:
                    pairs.append((name, value))
        encoded = ENCODER.block(pairs)
        if seen is not None:
            return encoded
        cached = _DEFAULT_BLOCKS[id(defaults)] = (block, encoded)
    return cached[1]


def check_name(name: bytes) -> bytes:
    """An app's field name, lower-cased and checked to be a token."""
    lowered = bytes(name).lower()
    if lowered not in _KNOWN_NAMES:
        if _NAME(lowered) is None:
            raise RuntimeError(f"Invalid HTTP header name {name!r}")
        if len(_KNOWN_NAMES) < 4096:
            _KNOWN_NAMES.add(lowered)
    return lowered


def plain_fields(headers: Any) -> list[tuple[bytes, bytes]]:
    """App fields (trailers, early hints) lower-cased and checked, without
    connection-specific ones."""
    fields = []
    for name, value in headers:
        lowered = check_name(name)
        if _BAD_OUT_VALUE(value) is not None:
            raise RuntimeError(f"Invalid HTTP header value {value!r}")
        if lowered not in CONNECTION_SPECIFIC:
            fields.append((lowered, bytes(value)))
    return fields


def decode_settings(value: bytes) -> bytes | None:
    """The SETTINGS payload in an HTTP2-Settings field (RFC 7540 §3.2.1: base64url of
    whole settings), or None when it is not valid: checked before answering 101, so a
    bad one leaves the request on HTTP/1.1."""
    try:
        raw = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except ValueError:
        return None
    return raw if len(raw) % 6 == 0 else None
