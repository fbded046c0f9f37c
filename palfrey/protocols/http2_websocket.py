"""WebSocket over an HTTP/2 stream (RFC 8441): the extended CONNECT request checked and
handed to the shared WebSocket endpoint, whose frames travel in DATA frames.

The handshake is answered with HEADERS 200 (§5), a TCP FIN becomes END_STREAM and an
abort RST_STREAM CANCEL. Imported with the first extended CONNECT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from palfrey.protocols.http2_fields import response_block
from palfrey.protocols.http2_frames import ErrorCode
from palfrey.protocols.websocket_endpoint import WebSocketEndpoint, scope_extensions

if TYPE_CHECKING:
    from palfrey.asgi.types import Scope
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.http2_asyncio import HTTP2Protocol, HTTP2Stream
    from palfrey.protocols.http2_fields import Request
    from palfrey.protocols.settings import WebSocketSettings

__all__ = ["H2WebSocket", "start_websocket"]


def start_websocket(
    conn: HTTP2Protocol, stream: HTTP2Stream, scope: Scope, request: Request
) -> tuple[int, bytes] | None:
    """RFC 8441 §4: an extended CONNECT with `:protocol: websocket` starts the session;
    anything else is a (status, text) to answer as plain HTTP."""
    settings = conn.websocket
    version = next((v for n, v in request.headers if n == b"sec-websocket-version"), None)
    if settings is None or request.protocol != b"websocket":
        return 501, b"Unsupported :protocol"
    if version != b"13":
        return 400, b"Unsupported Sec-WebSocket-Version"  # RFC 6455 §4.2.1
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    scope["subprotocols"] = _subprotocols(request.headers)
    scope["extensions"] = scope_extensions(conn.extensions)
    del scope["method"]
    offers = [v for n, v in request.headers if n == b"sec-websocket-extensions"]
    endpoint = stream.ws = H2WebSocket(conn.ctx, settings, stream)
    endpoint.start(scope, offers)
    return None


def _subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    found: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            found.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    return found


class H2WebSocket(WebSocketEndpoint):
    """The shared WebSocket endpoint and session on one HTTP/2 stream."""

    def __init__(
        self, ctx: ConnectionContext, settings: WebSocketSettings, stream: HTTP2Stream
    ) -> None:
        super().__init__(ctx, settings)
        self.stream = stream
        self._read_paused = False

    @property  # type: ignore[override,unused-ignore]
    def write_paused(self) -> bool:
        return self.stream.write_paused

    @write_paused.setter
    def write_paused(self, value: bool) -> None:
        pass  # the stream's flow control decides

    async def drain(self) -> None:
        await self.stream.drain()

    def data(self, data: bytes) -> None:
        self.stream.received += len(data)
        self._credit()
        if data:
            self.feed(data)

    def remote_end(self) -> None:
        if self.phase != 3:  # the peer left without a closing handshake
            self.lost()

    def _credit(self) -> None:
        # §6.9: credit is returned while the session is reading (its queue bounds it).
        stream = self.stream
        unacked = stream.received - stream.acked
        if not self._read_paused and unacked >= stream.conn.settings.initial_window_size >> 1:
            stream.open_window(unacked)

    def _write(self, data: bytes) -> None:
        self.stream.send_raw(data, False)

    def _write_accept(
        self, subprotocol: str | None, headers: list[tuple[bytes, bytes]], extension: bytes | None
    ) -> None:
        fields = list(headers)
        if subprotocol is not None:
            fields.append((b"sec-websocket-protocol", subprotocol.encode()))
        if extension is not None:
            fields.append((b"sec-websocket-extensions", extension))
        self._headers(200, fields)

    def _write_response(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self._headers(status, headers):
            self.stream.send_raw(body, True)

    def _headers(self, status: int, fields: list[tuple[bytes, bytes]]) -> bool:
        stream = self.stream
        if stream.closed:
            return False
        conn = stream.conn
        conn.core.send_headers(stream.stream_id, response_block(status, fields, conn.ctx.defaults))
        conn.want_flush()
        return True

    def _end(self) -> None:
        self.stream.send_raw(b"", True)

    def _abort(self) -> None:
        stream = self.stream
        stream.conn.reset(stream, ErrorCode.CANCEL)

    def _pause(self) -> None:
        self._read_paused = True

    def _resume(self) -> None:
        self._read_paused = False
        self._credit()

    def _forget(self) -> None:
        stream = self.stream
        stream.app_done = True
        stream.closed = True
        stream.conn.retire(stream)
