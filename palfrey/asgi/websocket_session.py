"""The ASGI WebSocket session (ASGI WebSocket spec 2.4), shared by every transport.

One WebSocketSession per connection. It turns the app's `receive`/`send` into calls on a
`WebSocketChannel`, the small interface a transport implements: the HTTP/1.1 upgrade
today (`protocols/websocket_endpoint.py`), an RFC 8441 HTTP/2 stream later. The channel
feeds the session with `on_message` and `on_disconnect`; nothing here knows about frames,
bytes on the wire, timers or which framing library is in use.

Backpressure: incoming messages wait in a deque of at most `max_queue`; when it is full
the channel is asked to stop reading, and `receive` asks it to resume once there is room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from palfrey.asgi.http_cycle import ClientDisconnected

if TYPE_CHECKING:
    from palfrey.asgi.types import ASGIApp, Message, Scope

logger = logging.getLogger("palfrey.error")

__all__ = ["ClientDisconnected", "WebSocketChannel", "WebSocketSession"]

_SEND = "websocket.send"
_CONNECT = {"type": "websocket.connect"}

# Session states.
CONNECTING, OPEN, RESPONDING, CLOSED = 0, 1, 2, 3

# RFC 6455 §7.4.1: codes an endpoint must not send; the app's choice becomes 1000.
_LOCAL_ONLY = frozenset((1005, 1006, 1015))


class WebSocketChannel(Protocol):
    """What a transport offers one WebSocket session."""

    write_paused: bool

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        """Complete the opening handshake (HTTP/1.1: 101; HTTP/2: 200)."""

    def send_text(self, data: str) -> None: ...

    def send_bytes(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; `on_disconnect` follows when it ends."""

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Refuse the handshake with this HTTP response and end the connection."""

    async def drain(self) -> None:
        """Wait until the peer accepts more data (called while `write_paused`)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def app_finished(self) -> None:
        """The app returned (or raised); the session is done with the channel."""


class WebSocketSession:
    """One WebSocket connection as the app sees it."""

    __slots__ = (
        "_connect_sent",
        "_paused",
        "_response_body",
        "_response_start",
        "_waiter",
        "channel",
        "close_code",
        "close_reason",
        "disconnected",
        "max_queue",
        "queue",
        "scope",
        "state",
        "status",
        "task",
    )

    def __init__(self, scope: Scope, channel: WebSocketChannel, *, max_queue: int) -> None:
        self.scope = scope
        self.channel = channel
        self.max_queue = max_queue
        self.queue: deque[Message] = deque()
        self.state = CONNECTING
        self.disconnected = False
        self.close_code = 1006
        self.close_reason = ""
        self.status = 0  # the handshake's HTTP answer, for the access log
        self.task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._connect_sent = False
        self._paused = False
        self._response_start: Message | None = None
        self._response_body: list[bytes] = []

    # -- channel side -------------------------------------------------------------

    def on_message(self, data: str | bytes) -> None:
        """A complete message from the peer."""
        if type(data) is str:
            message: Message = {"type": "websocket.receive", "text": data}
        else:
            message = {"type": "websocket.receive", "bytes": data}
        queue = self.queue
        queue.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(queue) >= self.max_queue and not self._paused:
            self._paused = True
            self.channel.pause_reading()

    def on_disconnect(self, code: int, reason: str = "") -> None:
        """The connection ended: the peer's close code, or 1006 when it just went away."""
        if self.disconnected:
            return
        self.disconnected = True
        self.close_code = code
        self.close_reason = reason
        self.state = CLOSED
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the app's side -----------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self._app_raised(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if self.state == CONNECTING and not self.disconnected:
                logger.error("ASGI callable returned without sending handshake.")
                self._internal_error()
            elif self.state == RESPONDING:
                logger.error("ASGI callable returned without completing response.")
                self._internal_error()
            elif self.state == OPEN:
                # RFC 6455 §7.1.2: the app is done, so the server starts the close.
                self.state = CLOSED
                self.channel.close(1000, "")
        finally:
            self.channel.app_finished()

    def _app_raised(self, exc: BaseException) -> None:
        if not isinstance(exc, asyncio.CancelledError):
            logger.error("Exception in ASGI application", exc_info=exc)
        if self.disconnected:
            return
        if self.state in (CONNECTING, RESPONDING):
            self._internal_error()
        elif self.state == OPEN:
            self.state = CLOSED
            self.channel.close(1011, "")  # RFC 6455 §7.4.1: internal error

    def _internal_error(self) -> None:
        self.state = CLOSED
        self.status = 500
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        with contextlib.suppress(ClientDisconnected):  # the client left meanwhile
            self.channel.respond(500, headers, b"Internal Server Error")

    async def receive(self) -> Message:
        if not self._connect_sent:
            self._connect_sent = True
            return dict(_CONNECT)
        queue = self.queue
        while True:
            if queue:
                message = queue.popleft()
                if self._paused and len(queue) < self.max_queue:
                    self._paused = False
                    self.channel.resume_reading()
                return message
            if self.disconnected:
                return {
                    "type": "websocket.disconnect",
                    "code": self.close_code,
                    "reason": self.close_reason,
                }
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == _SEND:
            if self.state != OPEN:
                self._refuse(kind)
            channel = self.channel
            if channel.write_paused:
                await channel.drain()
                if self.state != OPEN:
                    self._refuse(kind)
            text = message.get("text")
            if text is not None:
                channel.send_text(text)
                return
            data = message.get("bytes")
            if data is None:
                raise RuntimeError("websocket.send needs 'bytes' or 'text'")
            channel.send_bytes(data)
        elif kind == "websocket.accept":
            if self.state != CONNECTING:
                self._refuse(kind)
            self.state = OPEN
            self.status = 101
            headers = list(message.get("headers") or ())
            self.channel.accept(message.get("subprotocol"), headers)
        elif kind == "websocket.close":
            if self.state == CONNECTING:
                # ASGI: a close before accept is an HTTP 403 and no handshake.
                self.state = CLOSED
                self.status = 403
                self.channel.respond(403, [], b"")
            elif self.state == OPEN:
                self.state = CLOSED
                code = message.get("code") or 1000
                if code in _LOCAL_ONLY:
                    code = 1000
                self.channel.close(code, message.get("reason") or "")
            else:
                self._refuse(kind)
        elif kind == "websocket.http.response.start":
            if self.state != CONNECTING:
                self._refuse(kind)
            self.state = RESPONDING
            self._response_start = message
        elif kind == "websocket.http.response.body":
            if self.state != RESPONDING:
                self._refuse(kind)
            self._response_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                start = self._response_start
                assert start is not None
                self.state = CLOSED
                self.status = start["status"]
                headers = list(start.get("headers") or ())
                self.channel.respond(self.status, headers, b"".join(self._response_body))
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} in a WebSocket session")

    def _refuse(self, kind: str) -> Any:
        if self.disconnected or self.state == CLOSED:
            raise ClientDisconnected("the WebSocket is closed")
        raise RuntimeError(f"Unexpected ASGI message {kind!r} in this WebSocket state")
