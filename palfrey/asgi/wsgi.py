"""Serving a WSGI (PEP 3333) app from the event loop through a thread pool.

The WSGI app runs in a worker thread; every request-body read and every response chunk
crosses to the event loop and waits for it there. That gives backpressure both ways with
no buffering of whole bodies: `wsgi.input` pulls one `http.request` message when the app
reads past what it already has (so a 100-continue is only sent once the app reads), and
each chunk of the response iterable is sent, and its `send` awaited, before the next one
is produced.

Header names with "_" are dropped from the environ: "X_Forwarded_For" and
"X-Forwarded-For" would both become HTTP_X_FORWARDED_FOR, letting a client spoof a header
a proxy sets (gunicorn, nginx and Apache drop them too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import re
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any

from palfrey.asgi.adapters import Message, Receive, Scope, Send

__all__ = ["WSGIAdapter", "build_environ"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_STATUS = re.compile(r"[1-9][0-9]{2}(?: |$)")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class _ClientGone(OSError):
    """The connection ended (or the server is stopping) while the app was running."""


class WSGIAdapter:
    """An ASGI 3 app running `wsgi_app` in a pool of `executor_workers` threads.

    Also answers the lifespan protocol (stopping the pool at shutdown), and refuses
    WebSocket connections, which WSGI cannot serve.
    """

    def __init__(self, wsgi_app: WSGIApp, *, executor_workers: int = 10) -> None:
        self.app = wsgi_app
        self.executor_workers = executor_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Created on first use: the adapter is built before workers fork, threads after.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.executor_workers, thread_name_prefix="palfrey-wsgi"
            )
        return self._executor

    def shutdown(self) -> None:
        """Stop the thread pool (threads already running finish their request)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})  # before accept: a 403

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        bridge = _Bridge(loop, receive, send)
        environ = build_environ(scope, _Input(bridge))
        context = contextvars.copy_context()  # the app sees the request's contextvars
        future = loop.run_in_executor(self.executor, context.run, self._run, environ, bridge)
        try:
            await future
        except asyncio.CancelledError:
            # The thread cannot be cancelled; make its next read or write fail instead.
            bridge.abort()
            raise

    def _run(self, environ: dict[str, Any], bridge: _Bridge) -> None:
        response = _Response(bridge)
        try:
            result = self.app(environ, response.start_response)
            try:
                response.send_iterable(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except _ClientGone:
            pass  # nobody is left to answer


def build_environ(scope: Scope, body: Any) -> dict[str, Any]:
    """The PEP 3333 environ of an ASGI HTTP scope, reading the body from `body`."""
    root_path: str = scope.get("root_path", "")
    path: str = scope["path"]
    # ASGI's path includes root_path; WSGI splits them into SCRIPT_NAME and PATH_INFO.
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path = path[len(root_path) :]
    scheme: str = scope.get("scheme", "http")
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": _native(root_path),
        "PATH_INFO": _native(path),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        # The input ends with EOF at the end of the body, so chunked requests (no
        # CONTENT_LENGTH) can be read to the end (the mod_wsgi/gunicorn convention).
        "wsgi.input_terminated": True,
    }
    for name, value in scope.get("headers", ()):
        key = _environ_key(bytes(name))
        if key is None:
            continue
        text = bytes(value).decode("latin-1")
        if key in environ:
            # Repeated fields combine into one comma-separated value (RFC 9110 §5.3);
            # cookies are joined with "; " instead (RFC 6265 §5.4).
            separator = "; " if key == "HTTP_COOKIE" else ","
            text = environ[key] + separator + text
        environ[key] = text
    server = scope.get("server")
    if server and server[0]:
        environ["SERVER_NAME"] = str(server[0])
        environ["SERVER_PORT"] = str(server[1]) if server[1] else _DEFAULT_PORTS.get(scheme, "80")
    else:  # a UNIX socket: name the server after the Host header
        host = environ.get("HTTP_HOST", "localhost")
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not name or not port.isdigit():
            name, port = host, _DEFAULT_PORTS.get(scheme, "80")
        environ["SERVER_NAME"], environ["SERVER_PORT"] = name, port
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    return environ


def _native(text: str) -> str:
    # PEP 3333 "native strings": the bytes as latin-1. surrogateescape keeps paths that
    # were not valid UTF-8 byte-for-byte.
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


_KEYS: dict[bytes, str | None] = {}


def _environ_key(name: bytes) -> str | None:
    key = _KEYS.get(name, "")
    if key == "":
        if b"_" in name:
            key = None
        elif name == b"content-type":
            key = "CONTENT_TYPE"
        elif name == b"content-length":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_KEYS) < 1024:  # header names repeat; don't let odd ones grow this forever
            _KEYS[name] = key
    return key


class _Bridge:
    """Runs the connection's receive/send on the event loop from the WSGI thread."""

    __slots__ = ("_aborted", "_lock", "_pending", "loop", "receive", "send")

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, send: Send) -> None:
        self.loop = loop
        self.receive = receive
        self.send = send
        self._lock = threading.Lock()
        self._aborted = False
        self._pending: concurrent.futures.Future[Any] | None = None

    def call(self, function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """Await function(*args) on the loop, blocking this (worker) thread."""
        with self._lock:
            if self._aborted:
                raise _ClientGone("the request was cancelled")
            coroutine = function(*args)
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
            except RuntimeError:  # the loop is closed: the server is gone
                coroutine.close()
                raise _ClientGone("the event loop is closed") from None
            self._pending = future
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise _ClientGone("the request was cancelled") from None
        finally:
            self._pending = None

    def abort(self) -> None:
        """From the loop: fail the thread's current and future calls."""
        with self._lock:
            self._aborted = True
            if self._pending is not None:
                self._pending.cancel()

    def send_all(self, messages: Sequence[Message]) -> None:
        try:
            self.call(_send_all, self.send, messages)
        except _ClientGone:
            raise
        except OSError as exc:  # ASGI 2.4: send after the client left raises OSError
            raise _ClientGone(str(exc)) from None


async def _receive(receive: Receive) -> Message:
    return await receive()


async def _send_all(send: Send, messages: Sequence[Message]) -> None:
    # Several messages per crossing: a response start and its first chunk go together.
    for message in messages:
        await send(message)


class _Response:
    """start_response, write() and the response iterable, sent as they are produced."""

    __slots__ = ("bridge", "headers", "started", "status")

    def __init__(self, bridge: _Bridge) -> None:
        self.bridge = bridge
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.started:
                    # PEP 3333: too late to change the response; re-raise the app's error.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid a reference cycle through the traceback
        elif self.status is not None:
            raise RuntimeError("start_response() called again without exc_info (PEP 3333)")
        if not isinstance(status, str) or not _STATUS.match(status):
            raise ValueError(f"invalid WSGI status {status!r}: expected e.g. '200 OK'")
        self.status = int(status[:3])
        self.headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy write() callable: sends at once."""
        if data:
            self._send(bytes(data), more=True)

    def send_iterable(self, result: Iterable[bytes]) -> None:
        if isinstance(result, (list, tuple)):
            # Sized: the last chunk can carry more_body=False, saving a crossing (the
            # common one-chunk response becomes a single send of start + body).
            chunks = [bytes(chunk) for chunk in result if chunk]
            for chunk in chunks[:-1]:
                self._send(chunk, more=True)
            self._send(chunks[-1] if chunks else b"", more=False)
            return
        for chunk in result:
            if chunk:  # PEP 3333: no headers until the first non-empty chunk
                self._send(bytes(chunk), more=True)
        self._send(b"", more=False)

    def _send(self, body: bytes, *, more: bool) -> None:
        messages: list[Message] = []
        if not self.started:
            if self.status is None:
                raise RuntimeError("the WSGI app did not call start_response()")
            messages.append(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
            self.started = True
        messages.append({"type": "http.response.body", "body": body, "more_body": more})
        self.bridge.send_all(messages)


class _Input(io.RawIOBase):
    """wsgi.input: reads the request body from the event loop as the app asks for it."""

    def __init__(self, bridge: _Bridge) -> None:
        super().__init__()
        self._bridge = bridge
        self._buffer = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Pull one more message; False at the end of the body."""
        if self._eof:
            return False
        message = self._bridge.call(_receive, self._bridge.receive)
        if message["type"] == "http.request":
            self._buffer += message.get("body", b"")
            self._eof = not message.get("more_body", False)
        else:  # http.disconnect: the body ends here
            self._eof = True
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(self._buffer)
        while len(self._buffer) < size and self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(self._buffer) or not self._fill():
                end = len(self._buffer)
                break
        if 0 <= limit < end:
            end = limit
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> _Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line
