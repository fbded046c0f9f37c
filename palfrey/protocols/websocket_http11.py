"""WebSocket over an upgraded HTTP/1.1 connection (RFC 6455 §4).

The HTTP/1.1 connection parses the upgrade request as any other head, then calls
`upgrade`, which checks the opening handshake (§4.2.1), builds the ASGI scope and hands
the transport to a `WebSocketHTTP11` protocol. A refused handshake gets a complete 4xx
response and the connection ends; with no WebSocket backend the answer says so.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from palfrey.protocols.http11_response import CRLF, encode_head, status_line
from palfrey.protocols.websocket_core import HandshakeError, check_handshake
from palfrey.protocols.websocket_endpoint import WebSocketEndpoint, scope_extensions

if TYPE_CHECKING:
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.http11_base import HTTP11Connection
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
        transport: asyncio.Transport,
        accept_key: bytes,
    ) -> None:
        super().__init__(ctx, settings)
        self.transport = transport
        self._write = transport.write  # type: ignore[method-assign]
        self._writelines = transport.writelines  # type: ignore[method-assign,assignment]
        self._accept_key = accept_key
        self._read_paused = False
        self._closed = False

    # -- asyncio.Protocol ------------------------------------------------------------

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


def upgrade(
    conn: HTTP11Connection,
    method: bytes,
    target: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    rest: bytes,
) -> bool:
    """Take over `conn`'s transport for the WebSocket its request asked for; False when
    the handshake was refused (the response is written and the transport closing)."""
    ctx = conn.ctx
    transport = conn.transport
    scope = conn._scope(method, target, version, headers)
    # ASGI WebSocket scope: no method; ws/wss (the proxy hook, if any, already ran and
    # chose http/https from X-Forwarded-Proto or the transport).
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] in ("https", "wss") else "ws"
    http_method = scope.pop("method")
    scope["extensions"] = scope_extensions(conn.extensions)
    settings = ctx.websocket
    try:
        if settings is None or settings.engine is None:
            _warn_no_backend()
            raise HandshakeError(400, "WebSocket is not supported by this server")
        handshake = check_handshake(http_method, version, headers)
    except HandshakeError as exc:
        _refuse(conn, scope, exc)
        return False
    scope["subprotocols"] = handshake.subprotocols
    endpoint = WebSocketHTTP11(ctx, settings, transport, handshake.accept)
    ctx.state.connections.add(endpoint)
    transport.set_protocol(endpoint)
    endpoint.start(scope, handshake.extensions)
    if rest:
        endpoint.feed(rest)
    return True


def _refuse(conn: HTTP11Connection, scope: dict[str, object] | object, exc: HandshakeError) -> None:
    body = exc.reason.encode("latin-1", "replace") + b"\n"
    data = b"".join(
        (
            status_line(exc.status),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"".join(name + b": " + value + CRLF for name, value in exc.headers),
            b"connection: close\r\n",
            conn.ctx.defaults.block(),
            CRLF,
            body,
        )
    )
    conn.transport.write(data)
    conn.transport.close()
    access_log = conn.ctx.access_log
    if access_log is not None:
        access_log(scope, exc.status, len(body), 0.0)  # type: ignore[arg-type]


def _warn_no_backend() -> None:
    global _warned_no_backend
    if not _warned_no_backend:
        _warned_no_backend = True
        logger.warning(
            "Refused a WebSocket upgrade: no WebSocket backend (websocket.backend is "
            '"none", or neither wsproto nor websockets is installed).'
        )
