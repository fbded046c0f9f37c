"""WebSocket over an upgraded HTTP/1.1 connection (RFC 6455 §4).

The HTTP/1.1 connection parses the upgrade request as any other head, then hands a
`ProtocolSwitch` (the request's scope, fields and the bytes after the head) to `upgrade`,
which checks the opening handshake (§4.2.1) and answers with what the connection does
next: a `WebSocketHTTP11` protocol to give the transport to, or the bytes of a complete 4xx
response to write before closing (with no WebSocket backend the answer says so). This
module never touches the HTTP/1.1 connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from palfrey.protocols.http11_response import CRLF, encode_head, status_line
from palfrey.protocols.websocket_core import HandshakeError, check_handshake
from palfrey.protocols.websocket_endpoint import (
    WebSocketEndpoint,
    WebSocketExchange,
    scope_extensions,
)

if TYPE_CHECKING:
    from palfrey.asgi.types import Scope
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.http11_base import ProtocolSwitch
    from palfrey.protocols.settings import WebSocketSettings

logger = logging.getLogger("palfrey.error")

_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
_RESERVED = frozenset(
    (b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-extensions")
)
_warned_no_backend = False


class WebSocketHTTP11(WebSocketEndpoint, asyncio.Protocol):
    """The asyncio protocol of a connection after `101 Switching Protocols`."""

    def __init__(
        self,
        ctx: ConnectionContext,
        settings: WebSocketSettings,
        scope: Scope,
        accept_key: bytes,
        extension_offers: list[bytes],
        rest: bytes,
    ) -> None:
        super().__init__(ctx, settings)
        self._scope = scope
        self._accept_key = accept_key
        self._offers = extension_offers
        self._rest = rest
        self._read_paused = False
        self._closed = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The HTTP/1.1 connection hands its transport over: run the app, then read what
        the client sent after the handshake."""
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = transport = cast(asyncio.Transport, transport)
        self._write = transport.write  # type: ignore[method-assign]
        self._writelines = transport.writelines  # type: ignore[method-assign,assignment]
        self.start(self._scope, self._offers)
        rest, self._rest = self._rest, b""
        if rest:
            self.feed(rest)

    def data_received(self, data: bytes) -> None:
        self.feed(data)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.lost()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- WebSocketEndpoint primitives -------------------------------------------------

    def _write_accept(
        self, subprotocol: str | None, headers: list[tuple[bytes, bytes]], extension: bytes | None
    ) -> None:
        # RFC 6455 §4.2.2 item 5.
        parts = [_SWITCHING, b"sec-websocket-accept: ", self._accept_key, CRLF]
        if subprotocol:
            parts += (b"sec-websocket-protocol: ", subprotocol.encode("latin-1"), CRLF)
        if extension is not None:
            parts += (b"sec-websocket-extensions: ", extension, CRLF)
        defaults = self.ctx.defaults
        seen: set[bytes] = set()
        for name, value in headers:
            lname = name.lower()
            if lname in _RESERVED or (subprotocol and lname == b"sec-websocket-protocol"):
                continue  # the handshake's own fields are the server's to write
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
                raise RuntimeError(f"invalid HTTP header {name!r}: {value!r}")
            if lname in defaults.names:
                seen.add(lname)
            parts += (name, b": ", value, CRLF)
        parts.append(defaults.block_without(seen) if seen else defaults.block())
        parts.append(CRLF)
        self.transport.write(b"".join(parts))

    def _write_response(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        allowed = status not in (204, 304)
        head = encode_head(
            status,
            headers,
            self.ctx.defaults,
            http11=True,
            keep_alive=False,
            body_allowed=allowed,
            body_length=len(body),
        )
        self.transport.write(head.data + body if allowed else head.data)

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()

    def _abort(self) -> None:
        self._closed = True
        self.transport.abort()

    def _pause(self) -> None:
        if not self._read_paused and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._read_paused and not self._closed:
            self._read_paused = False
            self.transport.resume_reading()

    def _forget(self) -> None:
        self.ctx.state.connections.discard(self)


def upgrade(ctx: ConnectionContext, switch: ProtocolSwitch) -> WebSocketHTTP11 | bytes:
    """The answer to an HTTP/1.1 request that asked for a WebSocket: the protocol that
    takes the transport over, or when the handshake is refused the complete response to
    write before the connection closes."""
    # ASGI WebSocket scope: no method; ws/wss (the proxy hook, if any, already ran and
    # chose http/https from X-Forwarded-Proto or the transport).
    scope = switch.scope
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] in ("https", "wss") else "ws"
    http_method = scope.pop("method")
    scope["extensions"] = scope_extensions(scope.get("extensions") or {})
    settings = ctx.websocket
    try:
        if settings is None or settings.engine is None:
            _warn_no_backend()
            raise HandshakeError(400, "WebSocket is not supported by this server")
        handshake = check_handshake(http_method, switch.version, switch.headers)
    except HandshakeError as exc:
        return _refusal(ctx, scope, exc)
    scope["subprotocols"] = handshake.subprotocols
    return WebSocketHTTP11(
        ctx, settings, scope, handshake.accept, handshake.extensions, switch.rest
    )


def _refusal(ctx: ConnectionContext, scope: Scope, exc: HandshakeError) -> bytes:
    body = exc.reason.encode("latin-1", "replace") + b"\n"
    if ctx.observer is not None:
        WebSocketExchange(scope, ctx.observer).answered(exc.status, list(exc.headers), len(body))
    return b"".join(
        (
            status_line(exc.status),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"".join(name + b": " + value + CRLF for name, value in exc.headers),
            b"connection: close\r\n",
            ctx.defaults.block(),
            CRLF,
            body,
        )
    )


def _warn_no_backend() -> None:
    global _warned_no_backend
    if not _warned_no_backend:
        _warned_no_backend = True
        logger.warning(
            "Refused a WebSocket upgrade: no WebSocket backend (websocket.backend is "
            '"none", or neither wsproto nor websockets is installed).'
        )
