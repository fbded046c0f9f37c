"""WebSocket over HTTP/3 (RFC 9220): an extended CONNECT on a request stream carries the
shared WebSocket endpoint (palfrey.protocols.websocket_endpoint), with frames in DATA
frames, the handshake answered with HEADERS 200, FIN for a TCP FIN and a stream reset for
an abort; reading pauses by withholding the stream's credit. Imported with the first
extended CONNECT."""

from __future__ import annotations

from typing import TYPE_CHECKING

from palfrey.asgi.http_cycle import HTTPCycle
from palfrey.protocols.http3_fields import plain_response, response_fields, subprotocols
from palfrey.protocols.websocket_endpoint import WebSocketEndpoint, scope_extensions

if TYPE_CHECKING:
    from palfrey.asgi.types import Scope
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.http2_fields import Request
    from palfrey.protocols.http3_aioquic import H3Session, H3Stream
    from palfrey.protocols.settings import WebSocketSettings

__all__ = ["H3WebSocket", "start_websocket"]

_REQUEST_CANCELLED = 0x10C  # H3_REQUEST_CANCELLED (RFC 9114 §8.1)


def start_websocket(session: H3Session, stream: H3Stream, scope: Scope, request: Request) -> None:
    """RFC 9220: an extended CONNECT with `:protocol: websocket` (RFC 8441 §4) on `stream`
    becomes a `websocket` scope, or a problem answer when it cannot."""
    settings = session.ctx.websocket
    version = next((v for n, v in request.headers if n == b"sec-websocket-version"), None)
    problem = None
    if settings is None or not settings.engine or request.protocol != b"websocket":
        problem = plain_response(501, b"Unsupported :protocol")
    elif version != b"13":
        problem = plain_response(400, b"Unsupported Sec-WebSocket-Version")  # RFC 6455 §4.2.1
    if problem is not None:
        cycle = stream.cycle = HTTPCycle(scope, stream, session.ctx, not stream.remote_ended)
        cycle.start(problem, session.loop)
        return
    assert settings is not None
    scope["type"] = "websocket"
    scope["scheme"] = "wss"
    scope["subprotocols"] = subprotocols(request.headers)
    scope["extensions"] = scope_extensions(session.extensions)
    del scope["method"]
    offers = [v for n, v in request.headers if n == b"sec-websocket-extensions"]
    endpoint = stream.ws = H3WebSocket(session.ctx, settings, stream)
    endpoint.start(scope, offers)


class H3WebSocket(WebSocketEndpoint):
    """A WebSocket over one HTTP/3 stream (RFC 9220): the shared endpoint, with frames in
    DATA frames, the handshake answered with HEADERS 200, FIN for a TCP FIN and a stream
    reset for an abort. Reading pauses by withholding stream credit."""

    def __init__(self, ctx: ConnectionContext, settings: WebSocketSettings, stream: H3Stream):
        super().__init__(ctx, settings)
        self.stream = stream
        self.read_paused = False

    @property  # type: ignore[override,unused-ignore]
    def write_paused(self) -> bool:
        return self.stream.write_paused

    @write_paused.setter
    def write_paused(self, value: bool) -> None:
        pass  # the stream's acknowledgements decide

    async def drain(self) -> None:
        await self.stream.drain()

    def remote_end(self) -> None:
        if self.phase != 3:  # the peer left without a closing handshake
            self.lost()

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
        stream = self.stream
        session = stream.session
        if not stream.closed:
            session.h3.send_headers(
                stream.stream_id, response_fields(session.ctx.defaults, 200, fields)
            )
            session.want_flush()

    def _write_response(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        stream = self.stream
        session = stream.session
        if stream.closed:
            return
        fields = response_fields(session.ctx.defaults, status, headers)
        session.h3.send_headers(stream.stream_id, fields)
        stream.send_raw(body, True)

    def _end(self) -> None:
        self.stream.send_raw(b"", True)

    def _abort(self) -> None:
        stream = self.stream
        stream.session.reset(stream, _REQUEST_CANCELLED)

    def _pause(self) -> None:
        self.read_paused = True  # no stream credit until the session reads again

    def _resume(self) -> None:
        self.read_paused = False
        self.stream.session.want_flush()

    def _forget(self) -> None:
        stream = self.stream
        stream.session.streams.pop(stream.stream_id, None)
        stream.session.stream_finished(stream)
