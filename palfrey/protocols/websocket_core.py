"""WebSocket pieces shared by every backend and transport (sans-IO).

- `check_handshake`: the server's reading of an HTTP/1.1 opening handshake
  (RFC 6455 §4.2.1), as a value or a `HandshakeError` carrying the 4xx to answer.
- `negotiate_deflate`: permessage-deflate offers in, the accepted parameters out
  (RFC 7692 §7.1). Negotiation is done here, once, so both backends agree to the same
  parameters and only run the compression.
- `Engine` / `EngineSink`: what a framing backend (wsproto, websockets) offers and calls.
  An engine turns received bytes into whole messages and control events and frames
  outgoing messages; it never does I/O and never sees the ASGI app.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from palfrey.protocols.tokens import field_has_token, tokens

# RFC 6455 §1.3: the GUID appended to the client's key.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 6455 §7.4.1: codes an endpoint must never put in a close frame.
LOCAL_ONLY_CODES = frozenset((1005, 1006, 1015))

# Close codes used by the server itself (RFC 6455 §7.4.1; 1012 is IANA-registered).
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
ABNORMAL = 1006


class HandshakeError(Exception):
    """An opening handshake the server refuses: answer `status` (with `headers`)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True)
class Handshake:
    """What a valid opening handshake asks for."""

    accept: bytes  # Sec-WebSocket-Accept value
    subprotocols: list[str]
    extensions: list[bytes]  # raw Sec-WebSocket-Extensions values


def header_tokens(values: list[bytes]) -> list[bytes]:
    """The comma-separated tokens of one or more header values, lower-cased."""
    return [token for value in values for token in tokens(value)]


def wants_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when a request asks to switch to WebSocket: `Upgrade` lists `websocket` and
    `Connection` lists `upgrade`, each read as a token list (RFC 9110 §7.6.1, §7.8: an
    Upgrade that Connection does not name is ignored; `Connection: xupgrade` names no
    upgrade). A request that does not ask is served as plain HTTP, never dropped."""
    return field_has_token(headers, b"upgrade", b"websocket") and field_has_token(
        headers, b"connection", b"upgrade"
    )


def accept_key(key: bytes) -> bytes:
    """RFC 6455 §4.2.2 /key/: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def check_handshake(method: str, version: str, headers: list[tuple[bytes, bytes]]) -> Handshake:
    """Validate an HTTP/1.1 opening handshake (RFC 6455 §4.2.1) or raise HandshakeError.

    Host is already checked by the HTTP core (RFC 9112 §3.2).
    """
    if method != "GET":  # §4.2.1 item 1
        raise HandshakeError(405, "WebSocket handshake must use GET", ((b"allow", b"GET"),))
    if version != "1.1":  # §4.2.1 item 1: HTTP/1.1 or higher
        raise HandshakeError(400, "WebSocket handshake needs HTTP/1.1")
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        fields.setdefault(name, []).append(value)
    if b"websocket" not in header_tokens(fields.get(b"upgrade", [])):  # item 3
        raise HandshakeError(400, "Upgrade header must name websocket")
    if b"upgrade" not in header_tokens(fields.get(b"connection", [])):  # item 4
        raise HandshakeError(400, "Connection header must include Upgrade")
    versions = fields.get(b"sec-websocket-version", [])
    if [v.strip() for v in versions] != [b"13"]:  # item 6, and §4.4 for the answer
        raise HandshakeError(
            426, "Unsupported WebSocket version", ((b"sec-websocket-version", b"13"),)
        )
    keys = fields.get(b"sec-websocket-key", [])
    if len(keys) != 1:  # item 5
        raise HandshakeError(400, "Missing or repeated Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Invalid Sec-WebSocket-Key")
    protocols = [
        t.strip().decode("latin-1")
        for v in fields.get(b"sec-websocket-protocol", [])
        for t in v.split(b",")
        if t.strip()
    ]
    return Handshake(accept_key(key), protocols, fields.get(b"sec-websocket-extensions", []))


# -- permessage-deflate (RFC 7692) ---------------------------------------------------


#: The largest compression window Palfrey uses and asks clients to use (RFC 7692 §7.1.2):
#: 4 KiB instead of zlib's 32 KiB. With `DEFLATE_MEM_LEVEL` a connection's compressor
#: takes about 32 KiB instead of 256 KiB and compresses faster; ratios suffer only on
#: messages whose repeats lie further apart. The websockets library recommends the same.
DEFLATE_WINDOW_BITS = 12
#: zlib's memLevel for the server's compressor (8 by default).
DEFLATE_MEM_LEVEL = 5


@dataclass(frozen=True)
class Deflate:
    """Accepted permessage-deflate parameters, from the server's point of view."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = DEFLATE_WINDOW_BITS
    #: None when the client did not offer the parameter (it may use up to 15).
    client_max_window_bits: int | None = None

    def response(self) -> bytes:
        """The Sec-WebSocket-Extensions response value (RFC 7692 §7.1)."""
        parts = [b"permessage-deflate"]
        if self.server_no_context_takeover:
            parts.append(b"server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append(b"client_no_context_takeover")
        if self.server_max_window_bits != 15:
            parts.append(b"server_max_window_bits=%d" % self.server_max_window_bits)
        if self.client_max_window_bits is not None:
            parts.append(b"client_max_window_bits=%d" % self.client_max_window_bits)
        return b"; ".join(parts)


def _split_offers(values: list[bytes]) -> list[tuple[bytes, list[tuple[bytes, bytes | None]]]]:
    offers = []
    for value in values:
        for offer in value.split(b","):
            name, *params = (p.strip() for p in offer.split(b";"))
            parsed: list[tuple[bytes, bytes | None]] = []
            for param in params:
                key, eq, val = param.partition(b"=")
                val = val.strip().strip(b'"')
                parsed.append((key.strip().lower(), val if eq else None))
            offers.append((name.lower(), parsed))
    return offers


def _window_bits(value: bytes | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept_offer(params: list[tuple[bytes, bytes | None]]) -> Deflate | None:
    """One offer's parameters, or None to decline it (RFC 7692 §7.1: unknown, repeated
    or invalid parameters make the offer unacceptable)."""
    seen: set[bytes] = set()
    server_nct = client_nct = False
    # §7.1.2.1: a server may announce a smaller window than it was offered, or one that
    # was not asked for; §7.1.2.2: it may limit the client's only if the client offered.
    server_bits = DEFLATE_WINDOW_BITS
    client_bits: int | None = None
    for key, value in params:
        if key in seen:
            return None
        seen.add(key)
        if key == b"server_no_context_takeover" and value is None:  # §7.1.1.1
            server_nct = True
        elif key == b"client_no_context_takeover" and value is None:  # §7.1.1.2
            client_nct = True
        elif key == b"server_max_window_bits":  # §7.1.2.1
            bits = _window_bits(value)
            if bits is None:
                return None
            if bits == 8:
                # zlib cannot compress with an 8-bit raw window (it silently uses 9),
                # so this offer is declined rather than violated.
                return None
            server_bits = min(bits, DEFLATE_WINDOW_BITS)
        elif key == b"client_max_window_bits":  # §7.1.2.2: the value is optional
            bits = DEFLATE_WINDOW_BITS if value is None else _window_bits(value)
            if bits is None:
                return None
            client_bits = min(bits, DEFLATE_WINDOW_BITS)
        else:
            return None
    return Deflate(server_nct, client_nct, server_bits, client_bits)


def negotiate_deflate(values: list[bytes]) -> Deflate | None:
    """The first acceptable permessage-deflate offer (RFC 7692 §5: in the client's order
    of preference), or None."""
    for name, params in _split_offers(values):
        if name == b"permessage-deflate":
            accepted = _accept_offer(params)
            if accepted is not None:
                return accepted
    return None


# -- engines ------------------------------------------------------------------------


class EngineSink(Protocol):
    """What an engine calls while it parses received bytes."""

    def message(self, data: str | bytes) -> None:
        """A complete text (str) or binary (bytes) message."""

    def write(self, data: bytes) -> None:
        """Bytes the engine must send on its own (pongs, the close reply)."""

    def pong(self) -> None:
        """A pong arrived (RFC 6455 §5.5.3)."""

    def closed(self, code: int, reason: str) -> None:
        """The peer's close frame arrived; a reply (if one was due) is already written."""

    def failed(self, code: int, reason: str) -> None:
        """The peer broke the protocol; a close frame with `code` is already written and
        the connection must end (RFC 6455 §7.1.7)."""


class Engine(Protocol):
    """A WebSocket framing backend for one connection (server side)."""

    def receive(self, data: bytes) -> None:
        """Parse received bytes, calling the sink for each event."""

    def text(self, data: str) -> bytes:
        """One complete text message, framed."""

    def binary(self, data: bytes) -> bytes:
        """One complete binary message, framed."""

    def ping(self, payload: bytes) -> bytes: ...

    def close(self, code: int, reason: str) -> bytes:
        """The close frame that starts (or answers) the closing handshake."""


EngineFactory = Callable[..., Engine]
"""`factory(sink, max_size=..., deflate=Deflate | None) -> Engine`."""

_ENGINES = {
    "wsproto": "palfrey.protocols.websocket_wsproto",
    "websockets-sansio": "palfrey.protocols.websocket_websockets",
}


def _on_first_use(module: str) -> EngineFactory:
    """The engine of `module`, imported when the first WebSocket is accepted: a server
    that never upgrades a connection never loads the framing library (wsproto, or the
    websockets package, which imports importlib.metadata: 2-4 MiB of resident memory)."""
    engine: EngineFactory | None = None

    def make(*args: Any, **kwargs: Any) -> Engine:
        nonlocal engine
        if engine is None:
            engine = importlib.import_module(module).ENGINE
        return engine(*args, **kwargs)

    return make


@cache
def engine_factory(backend: str) -> EngineFactory | None:
    module = _ENGINES.get(backend)
    return None if module is None else _on_first_use(module)
