"""The ASGI HTTP request/response cycle, shared by every HTTP version.

One HTTPCycle per request. It turns the app's `receive`/`send` calls into calls on an
`HTTPChannel`, the small interface a protocol implements (HTTP/1.1 connection today, an
HTTP/2 or HTTP/3 stream later): write the head and body, report backpressure, ask for more
request body, and learn about disconnects. Nothing here knows about bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from palfrey.asgi.types import ASGIApp, Message, Scope
    from palfrey.protocols.context import ConnectionContext

logger = logging.getLogger("palfrey.error")

_START = "http.response.start"
_BODY = "http.response.body"
_PATHSEND = "http.response.pathsend"
_TRAILERS = "http.response.trailers"
_EARLY_HINT = "http.response.early_hint"


class ClientDisconnected(OSError):
    """Raised by `send` once the client has gone (ASGI HTTP spec 2.4)."""


_EAGER = sys.version_info >= (3, 12)
"""Python 3.12+ can start a Task eagerly (asyncio eager task start)."""

_TASK_NAME = "palfrey.http"
"""The name of every request's Task before Python 3.12. Without one, Python 3.10 and 3.11
format "Task-<n>" for each Task they make (about 1,500-1,900 instructions, over a hello's
1%); 3.12 formats a name only when asked. As on 3.12's eager path, the Task is made
directly, not through the loop's task factory."""

_monotonic = time.monotonic


class HTTPChannel(Protocol):
    """What a protocol offers one request's cycle."""

    write_paused: bool

    def write_response(
        self, cycle: HTTPCycle, status: int, headers: Any, body: bytes, more_body: bool
    ) -> None:
        """Write the head, with the first body chunk (`more_body` false: the whole body)."""

    def write_body(self, cycle: HTTPCycle, body: bytes, more_body: bool) -> None:
        """Write a later body chunk; `more_body` false ends the response."""

    async def write_file(self, cycle: HTTPCycle, status: int, headers: Any, path: str) -> None:
        """Write the head and a whole file as the body (zero-copy where possible)."""

    async def drain(self) -> None:
        """Wait until the peer accepts more data (only called while `write_paused`)."""

    def want_body(self, cycle: HTTPCycle) -> None:
        """The app waits for request body: resume reading if it was paused."""

    def send_continue(self, cycle: HTTPCycle) -> None:
        """Send `100 Continue` (RFC 9110 §10.1.1) unless the response has begun."""

    def app_failed(self, cycle: HTTPCycle) -> None:
        """The app raised after starting its response: end the exchange abruptly."""

    def app_finished(self, cycle: HTTPCycle) -> None:
        """The app returned (or raised); the cycle is done with the channel."""


class HTTPCycle:
    """One request: the app's receive/send and the state between them."""

    # Set when they happen, not in __init__ (read with getattr by the access log): the
    # app's `http.response.start` message, and the bytes of the encoded response head
    # where the protocol records them (HTTP/1.1).
    response_start: Message
    head_bytes: int

    __slots__ = (
        "_body",
        "_buffered",
        "_final_delivered",
        "_pending",
        "_waiter",
        "body_received",
        "bytes_sent",
        "channel",
        "complete",
        "ctx",
        "disconnected",
        "expect_continue",
        "head_bytes",
        "more_body",
        "response_start",
        "scope",
        "start_time",
        "started",
        "status",
        "task",
        "trailers",
    )

    def __init__(
        self,
        scope: Scope,
        channel: HTTPChannel,
        ctx: ConnectionContext,
        more_body: bool,
        expect_continue: bool = False,
    ) -> None:
        self.scope = scope
        self.channel = channel
        self.ctx = ctx
        self.more_body = more_body  # request body still to arrive
        self.expect_continue = expect_continue
        self._body: list[bytes] | None = None  # request body not yet handed to the app
        self._buffered = 0
        self._final_delivered = False
        self._waiter: asyncio.Future[None] | None = None
        self._pending: Message | None = None  # http.response.start not yet written
        self.body_received = 0
        self.started = False
        self.complete = False
        self.disconnected = False
        self.status = 0
        self.bytes_sent = 0
        #: time.monotonic() when the app started (set only when observed: access log or
        #: metrics; not loop.time(), which uvloop caches per iteration at 1 ms resolution).
        self.start_time = 0.0
        self.task: asyncio.Task[None] | None = None
        #: `http.response.start` announced trailers: the last body does not end it.
        self.trailers = False

    # -- protocol side -------------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        """Request body bytes arrived (the protocol applies backpressure via `buffered`)."""
        self.body_received += len(data)
        if self.complete or self.disconnected:
            return  # response already done: the rest of the body is discarded
        # Kept as pieces: joined once by `receive` instead of copied on every read.
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)
        self._buffered += len(data)
        self._wake()

    def body_done(self) -> None:
        self.more_body = False
        self._wake()

    @property
    def buffered(self) -> int:
        return self._buffered

    def finish(self) -> None:
        """The response is complete; a waiting `receive` now reports a disconnect."""
        self.complete = True
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the app's side ----------------------------------------------------------------

    def start(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        """Run the app for this request in its own Task (every protocol starts it here)."""
        ctx = self.ctx
        if ctx.observe is not None:
            self.start_time = _monotonic()
        context = contextvars.Context() if ctx.reset_contextvars else None
        coro = self.run(app)
        if _EAGER:
            # Run the app synchronously up to its first real suspension: a hello-world
            # response is written before this returns, with no loop round trip.
            self.task = asyncio.Task(coro, loop=loop, context=context, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        elif context is None:
            self.task = asyncio.Task(coro, loop=loop, name=_TASK_NAME)
        else:
            # A task copies the context current at its creation (Python 3.10 has no
            # `context=` argument), so create it inside the fresh one.
            self.task = context.run(asyncio.Task, coro, loop=loop, name=_TASK_NAME)

    async def run(self, app: ASGIApp) -> None:
        state = self.ctx.state
        state.cycles.add(self)
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self._app_raised(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not self.started:
                if not self.disconnected:
                    logger.error("ASGI callable returned without starting response.")
                    self._internal_error()
            elif not self.complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self._fail()
        finally:
            state.cycles.discard(self)
            self.channel.app_finished(self)

    def _app_raised(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            if not self.complete:
                self.channel.app_failed(self)
            return
        if isinstance(exc, ClientDisconnected) and self.disconnected:
            # Our own `send` raised it because the client left: routine, not an app
            # error. One ERROR traceback per abandoned request let every client that
            # drops a busy HTTP/2 connection write ~100 of them (uvicorn and hypercorn
            # log nothing here).
            logger.debug("ASGI application stopped: the client disconnected")
            return
        logger.error("Exception in ASGI application", exc_info=exc)
        if not self.started and not self.disconnected:
            self._internal_error()
        elif not self.complete and not self.disconnected:
            self._fail()

    def _fail(self) -> None:
        if self._pending is not None:
            # Nothing is on the wire yet, so a clean 500 is still possible.
            self._pending = None
            self._internal_error()
        else:
            self.channel.app_failed(self)

    def _internal_error(self) -> None:
        self.started = True
        self.status = 500
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        self.channel.write_response(self, 500, headers, b"Internal Server Error", False)

    async def receive(self) -> Message:
        if self.expect_continue:
            self.expect_continue = False
            self.channel.send_continue(self)
        while not (self.disconnected or self.complete):
            if self._body or (not self.more_body and not self._final_delivered):
                pieces = self._body
                if pieces is None:
                    body = b""
                else:
                    body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                self._body = None
                self._buffered = 0
                self._final_delivered = not self.more_body
                if self.more_body:
                    self.channel.want_body(self)
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if self.more_body:
                self.channel.want_body(self)
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client has disconnected")
        channel = self.channel
        if channel.write_paused:
            await channel.drain()
            if self.disconnected:
                raise ClientDisconnected("the client has disconnected")
        kind = message["type"]
        start = self._pending
        if start is not None:
            # The common case first: the body that follows `http.response.start`.
            if kind == _BODY:
                self._pending = None
                body = message.get("body", b"")
                self.bytes_sent += len(body)
                channel.write_response(
                    self,
                    self.status,
                    start.get("headers", ()),
                    body,
                    message.get("more_body", False),
                )
            elif kind == _PATHSEND:
                await self._send_path(message)
            elif kind in (_EARLY_HINT, _TRAILERS):
                # Optional extensions: a channel that has no writer for them drops them.
                self._send_extension(kind, message)
            else:
                raise RuntimeError(f"Expected {_BODY!r}, got {kind!r}")
        elif kind == _START and not self.started:
            self.started = True
            self.status = message["status"]
            self.trailers = bool(message.get("trailers", False))
            self._pending = self.response_start = message
            # The head waits for the first body chunk so a small response is one write
            # (ASGI lets a server hold `http.response.start` until then); if the app
            # pauses before sending one, the head goes out on the next loop turn, in one
            # batch per server rather than a call_soon per response.
            self.ctx.state.hold_head(self)
        elif kind in (_EARLY_HINT, _TRAILERS):
            self._send_extension(kind, message)
        elif not self.started:
            raise RuntimeError(f"Expected {_START!r}, got {kind!r}")
        elif self.complete:
            raise RuntimeError(f"Unexpected {kind!r} after the response completed")
        elif kind == _BODY:
            body = message.get("body", b"")
            self.bytes_sent += len(body)
            channel.write_body(self, body, message.get("more_body", False))
        else:
            raise RuntimeError(f"Expected {_BODY!r}, got {kind!r}")

    def _send_extension(self, kind: str, message: Message) -> None:
        # `http.response.early_hint` goes out before the response head (RFC 8297: 103);
        # `http.response.trailers` after the last body chunk (RFC 9110 §6.5).
        if kind == _EARLY_HINT:
            writer = getattr(self.channel, "write_early_hint", None)
            if writer is not None and not self.started:
                writer(self, message.get("links", ()))
            return
        writer = getattr(self.channel, "write_trailers", None)
        if writer is not None and self.trailers and self.started and not self.complete:
            self._flush_pending()
            writer(self, message.get("headers", ()), message.get("more_trailers", False))

    def _flush_pending(self) -> None:
        if self._pending is not None:
            self.flush_head()

    async def _send_path(self, message: Message) -> None:
        start, self._pending = self._pending, None
        assert start is not None
        path = os.fspath(message["path"])
        await self.channel.write_file(self, self.status, start.get("headers", ()), path)

    def flush_head(self) -> None:
        """Write a held `http.response.start` with no body yet (the app paused)."""
        start, self._pending = self._pending, None
        if start is not None and not self.disconnected:
            self.channel.write_response(self, self.status, start.get("headers", ()), b"", True)
