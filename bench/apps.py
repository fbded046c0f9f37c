"""ASGI applications used by the Palfrey benchmark harness.

One module-level ``app`` dispatches on the request path so that a single server
process serves every scenario of a run:

``GET /``
    ``hello``: a fixed 13-byte ``Hello, world!`` body with ``content-length``.
``POST /echo``
    ``echo``: reads the whole request body and returns it with
    ``content-length`` set.
``GET /stream``
    ``stream``: 1 MiB sent as 16 chunks of 64 KiB using ``more_body``, without
    ``content-length`` (so HTTP/1.1 servers use chunked transfer encoding).
WebSocket, any path
    ``ws``: accepts and echoes every message back (text as text, bytes as bytes).

The app is deliberately tiny (response headers and bodies are pre-built at
import time) so that the numbers measure the server, not the application. Every
server under test runs this exact module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

HELLO_BODY = b"Hello, world!"
STREAM_CHUNK_SIZE = 64 * 1024
STREAM_TOTAL_SIZE = 1024 * 1024
STREAM_CHUNK = b"x" * STREAM_CHUNK_SIZE
STREAM_CHUNKS = STREAM_TOTAL_SIZE // STREAM_CHUNK_SIZE

_TEXT_PLAIN = (b"content-type", b"text/plain")
_OCTET_STREAM = (b"content-type", b"application/octet-stream")
_HELLO_HEADERS = [_TEXT_PLAIN, (b"content-length", str(len(HELLO_BODY)).encode())]
_STREAM_HEADERS = [_OCTET_STREAM]
_NOT_FOUND_HEADERS = [_TEXT_PLAIN, (b"content-length", b"9")]
_NOT_ALLOWED_HEADERS = [_TEXT_PLAIN, (b"content-length", b"18")]

# Message dicts are built per request (servers are allowed to treat them as
# their own); only the immutable bytes/headers above are shared.


async def _respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _echo(receive: Receive, send: Send) -> None:
    chunks: list[bytes] = []
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        more_body = message.get("more_body", False)
    body = b"".join(chunks)
    headers = [_OCTET_STREAM, (b"content-length", str(len(body)).encode())]
    await _respond(send, 200, headers, body)


async def _stream(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
    for _ in range(STREAM_CHUNKS):
        await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _websocket_echo(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Dispatch on path: ``/`` hello, ``/echo`` echo, ``/stream`` stream; WebSocket echo."""
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            await _websocket_echo(receive, send)
        return
    path = scope["path"]
    method = scope["method"]
    if path == "/":
        if method != "GET" and method != "HEAD":
            await _respond(send, 405, _NOT_ALLOWED_HEADERS, b"Method Not Allowed")
            return
        await _respond(send, 200, _HELLO_HEADERS, HELLO_BODY)
    elif path == "/echo":
        if method != "POST":
            await _respond(send, 405, _NOT_ALLOWED_HEADERS, b"Method Not Allowed")
            return
        await _echo(receive, send)
    elif path == "/stream":
        if method != "GET" and method != "HEAD":
            await _respond(send, 405, _NOT_ALLOWED_HEADERS, b"Method Not Allowed")
            return
        await _stream(send)
    else:
        await _respond(send, 404, _NOT_FOUND_HEADERS, b"Not Found")
