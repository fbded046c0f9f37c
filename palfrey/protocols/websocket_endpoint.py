"""One WebSocket connection between a framing engine, a byte stream and an ASGI session.

`WebSocketEndpoint` is transport-agnostic: it implements the session's channel (accept,
send, close, refuse), the engine's sink (messages, pongs, close frames, failures), the
closing handshake, keep-alive pings, the idle bound, the handshake timeout and the
graceful-shutdown close (1012). A transport subclasses it and supplies six primitives:
`_write` (frame bytes), `_write_accept` and `_write_response` (the handshake answers),
`_end` (graceful end of the stream), `_abort`, and `_pause`/`_resume` (reading).
HTTP/1.1 (`websocket_http11.py`) does it with an asyncio transport; an RFC 8441 HTTP/2
stream can do it with DATA frames.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import struct
from typing import TYPE_CHECKING, Any

from palfrey.asgi.http_cycle import ClientDisconnected
from palfrey.asgi.websocket_session import CLOSED as SESSION_CLOSED
from palfrey.asgi.websocket_session import WebSocketSession
from palfrey.protocols.websocket_core import (
    ABNORMAL,
    GOING_AWAY,
    INTERNAL_ERROR,
    SERVICE_RESTART,
    Engine,
    negotiate_deflate,
)

if TYPE_CHECKING:
    from palfrey.asgi.types import Scope
    from palfrey.protocols.context import ConnectionContext
    from palfrey.protocols.settings import WebSocketSettings

logger = logging.getLogger("palfrey.error")

HANDSHAKE, OPEN, CLOSING, CLOSED = 0, 1, 2, 3
_PENDING_LIMIT = 65536  # bytes a client may send before the handshake completes
# Payloads from this size are written beside their frame header (writelines) rather than
# copied into one buffer with it; below it one small copy is cheaper than two buffers.
_SPLIT_WRITE = 4096
# RFC 6455 §5.2: FIN + opcode, and the first length byte of an unmasked server frame.
_TEXT_FIN, _BINARY_FIN = 0x81, 0x82
_SHORT_HEADERS = tuple((bytes((_TEXT_FIN, n)), bytes((_BINARY_FIN, n))) for n in range(126))
_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


class WebSocketEndpoint:
    """The transport-independent half of a WebSocket connection (see module docstring)."""

    def __init__(self, ctx: ConnectionContext, settings: WebSocketSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.phase = HANDSHAKE
        self.engine: Engine | None = None
        self.session: WebSocketSession = None  # type: ignore[assignment]
        self.write_paused = False
        self.extension_offers: list[bytes] = []
        self._drain_waiter: asyncio.Future[None] | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None  # handshake / close bounds
        self._ping_at = 0.0
        self._pong_due: float | None = None
        self._idle_at = 0.0
        self._active = False
        self._app_done = False
        self._stream_lost = False
        self._start_time = 0.0
        # No extension negotiated: data frames are framed here, without the engine.
        self._plain = False

    # -- to be provided by a transport -----------------------------------------------

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _writelines(self, parts: tuple[bytes, bytes]) -> None:
        """Write a frame header and its payload (a transport may avoid joining them)."""
        self._write(b"".join(parts))

    def _write_accept(
        self, subprotocol: str | None, headers: list[tuple[bytes, bytes]], extension: bytes | None
    ) -> None:
        raise NotImplementedError

    def _write_response(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _pause(self) -> None:
        raise NotImplementedError

    def _resume(self) -> None:
        raise NotImplementedError

    def _forget(self) -> None:
        """The stream is gone and the app has returned."""

    # -- lifecycle -------------------------------------------------------------------

    def start(self, scope: Scope, extension_offers: list[bytes]) -> None:
        """Run the app for this handshake."""
        ctx = self.ctx
        self.extension_offers = extension_offers
        session = self.session = WebSocketSession(scope, self, max_queue=self.settings.max_queue)
        if ctx.access_log is not None:
            self._start_time = self.loop.time()
        timeout = self.settings.handshake_timeout
        if timeout is not None:
            self._deadline = self.loop.call_later(timeout, self._handshake_expired)
        coro = session.run(ctx.app)
        if ctx.reset_contextvars:
            session.task = contextvars.Context().run(self.loop.create_task, coro)
        else:
            session.task = self.loop.create_task(coro)

    def feed(self, data: bytes) -> None:
        """Bytes from the peer."""
        engine = self.engine
        if engine is not None:
            engine.receive(data)
        elif self.phase == HANDSHAKE:
            # RFC 6455 §4.1: the client must wait for our answer, but keep what an eager
            # one sends and parse it once the app accepts.
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > _PENDING_LIMIT:
                self._pause()

    def lost(self) -> None:
        """The byte stream is gone."""
        self._stream_lost = True
        self.phase = CLOSED
        self._cancel_timers()
        self.session.on_disconnect(ABNORMAL)
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._app_done:
            self._forget()

    # -- WebSocketChannel (what the session calls) ---------------------------------------

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        if self.phase != HANDSHAKE:
            raise ClientDisconnected("the WebSocket connection has gone")
        settings = self.settings
        deflate = None
        if settings.per_message_deflate and self.extension_offers:
            deflate = negotiate_deflate(self.extension_offers)
        assert settings.engine is not None
        engine = self.engine = settings.engine(self, max_size=settings.max_size, deflate=deflate)
        # Messages go straight from the engine to the session unless activity is tracked.
        if settings.idle_timeout is None:
            self.message = self.session.on_message  # type: ignore[method-assign]
        self._plain = deflate is None
        self._write_accept(subprotocol, headers, deflate.response() if deflate else None)
        self.phase = OPEN
        self._cancel_deadline()
        self._log(101, 0)
        self._start_keepalive()
        if self._pending:
            pending, self._pending = b"".join(self._pending), []
            if self._pending_size > _PENDING_LIMIT:
                self._resume()
            engine.receive(pending)

    def send_text(self, data: str) -> None:
        self._active = True
        if self._plain:
            self._send_frame(0, data.encode("utf-8"))
        else:
            self._write(self.engine.text(data))  # type: ignore[union-attr]

    def send_bytes(self, data: bytes) -> None:
        self._active = True
        if self._plain:
            # A bytearray the app may reuse must not sit in the transport's buffer.
            self._send_frame(1, data if type(data) is bytes else bytes(data))
        else:
            self._write(self.engine.binary(data))  # type: ignore[union-attr]

    def _send_frame(self, kind: int, payload: bytes) -> None:
        """One unfragmented, unmasked, uncompressed data frame (RFC 6455 §5.2, §5.6):
        kind 0 is text, 1 binary. The same bytes the engines produce, without their
        per-frame objects and copies."""
        length = len(payload)
        if length < 126:
            self._write(_SHORT_HEADERS[length][kind] + payload)
            return
        first = _BINARY_FIN if kind else _TEXT_FIN
        if length < 65536:
            header = _pack_medium(first, 126, length)
        else:
            header = _pack_long(first, 127, length)
        if length < _SPLIT_WRITE:
            self._write(header + payload)
        else:
            self._writelines((header, payload))

    def close(self, code: int, reason: str) -> None:
        """The app (or the server) starts the closing handshake (RFC 6455 §7.1.2)."""
        if self.phase != OPEN:
            return
        self.phase = CLOSING
        self.session.state = SESSION_CLOSED
        self._write(self.engine.close(code, reason))  # type: ignore[union-attr]
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.settings.close_timeout, self._close_expired)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.phase != HANDSHAKE:
            raise ClientDisconnected("the WebSocket connection has gone")
        self.phase = CLOSED
        self._cancel_deadline()
        self._write_response(status, headers, body)
        self._log(status, len(body))
        self._end()

    async def drain(self) -> None:
        if not self.write_paused or self.phase == CLOSED:
            return
        if self._drain_waiter is None:
            self._drain_waiter = self.loop.create_future()
        await self._drain_waiter

    def pause_reading(self) -> None:
        self._pause()

    def resume_reading(self) -> None:
        self._resume()

    def app_finished(self) -> None:
        self._app_done = True
        if self.phase == HANDSHAKE:  # the app was cancelled before answering
            self.respond(500, [], b"")
        if self._stream_lost:
            self._forget()

    # -- EngineSink (what the engine calls) ---------------------------------------------

    def message(self, data: str | bytes) -> None:
        self._active = True
        self.session.on_message(data)

    def write(self, data: bytes) -> None:
        self._write(data)

    def pong(self) -> None:
        self._pong_due = None

    def closed(self, code: int, reason: str) -> None:
        """The peer's close frame: the handshake is complete, or it was the peer's turn
        and the engine has replied. The server closes the TCP connection (§7.1.1)."""
        self.phase = CLOSED
        self._cancel_timers()
        self.session.on_disconnect(code, reason)
        self._end()

    def failed(self, code: int, reason: str) -> None:
        self.phase = CLOSED
        self._cancel_timers()
        self.session.on_disconnect(code, reason)
        self._end()

    # -- server side -----------------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful shutdown: close 1012 (service restart) and wait for the reply."""
        if self.phase == OPEN:
            self.close(SERVICE_RESTART, "Service Restart")
        elif self.phase == HANDSHAKE:
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            self.session.state = SESSION_CLOSED
            self.respond(503, headers, b"Service Unavailable")

    def abort(self) -> None:
        task = self.session.task
        if task is not None and not task.done():
            task.cancel()
        if not self._stream_lost:
            self.phase = CLOSED
            self._abort()

    # -- timers ------------------------------------------------------------------------

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self.phase == HANDSHAKE:
            logger.warning("WebSocket handshake timed out: the app did not accept in time.")
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            self.session.state = SESSION_CLOSED
            self.respond(503, headers, b"WebSocket handshake timed out")

    def _close_expired(self) -> None:
        # RFC 6455 §7.1.1: the peer never answered our close frame.
        self._deadline = None
        if not self._stream_lost:
            self.phase = CLOSED
            self._abort()

    def _fail_local(self, code: int, reason: str) -> None:
        """End the connection from our side without waiting for the peer (§7.1.7)."""
        self.close(code, reason)
        self.phase = CLOSED
        self.session.on_disconnect(code, reason)
        self._end()

    def _start_keepalive(self) -> None:
        settings = self.settings
        now = self.loop.time()
        self._ping_at = now + settings.ping_interval if settings.ping_interval else 0.0
        self._idle_at = now + settings.idle_timeout if settings.idle_timeout else 0.0
        self._schedule()

    def _schedule(self) -> None:
        times = [t for t in (self._ping_at, self._idle_at, self._pong_due) if t]
        if times and self.phase == OPEN:
            self._timer = self.loop.call_at(min(times), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.phase != OPEN:
            return
        now = self.loop.time()
        settings = self.settings
        if self._pong_due is not None and now >= self._pong_due:
            # RFC 6455 §5.5.2: no pong, so the peer is gone or stuck.
            self._fail_local(INTERNAL_ERROR, "keepalive ping timeout")
            return
        if self._idle_at and now >= self._idle_at:
            if not self._active:
                self.close(GOING_AWAY, "idle timeout")
                return
            self._active = False
            self._idle_at = now + (settings.idle_timeout or 0.0)
        if self._ping_at and now >= self._ping_at:
            self._write(self.engine.ping(os.urandom(4)))  # type: ignore[union-attr]
            self._ping_at = now + (settings.ping_interval or 0.0)
            if settings.ping_timeout and self._pong_due is None:
                self._pong_due = now + settings.ping_timeout
        self._schedule()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_timers(self) -> None:
        self._cancel_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- access log --------------------------------------------------------------------

    def _log(self, status: int, size: int) -> None:
        access_log = self.ctx.access_log
        if access_log is not None:
            access_log(self.session.scope, status, size, self.loop.time() - self._start_time)


def scope_extensions(http_extensions: dict[str, Any]) -> dict[str, Any]:
    """A WebSocket scope's extensions: the denial response, and the connection's own
    (TLS, the PROXY protocol header) but none of HTTP's response extensions."""
    extensions: dict[str, Any] = {"websocket.http.response": {}}
    for name, value in http_extensions.items():
        if not name.startswith("http.response."):
            extensions[name] = value
    return extensions
