"""The ASGI app the HTTP/3 tests serve (as `http3_app:app` in a `palfrey` process): one
endpoint per behaviour under test. What the app observes (a disconnect) it prints, one
write per line, for the test to read in the server's log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any

TEXT = [(b"content-type", b"text/plain")]
CHUNK = 65536


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write: workers share the pipe


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    handler = ROUTES.get(scope["path"], _hello)
    await handler(scope, receive, send)


async def _read(receive: Any) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    text = f"{scope['http_version']} {scope['method']} {scope['path']} {os.getpid()}"
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": text.encode()})


async def _digest(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = await _read(receive)
    text = f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": text.encode()})


def pattern(size: int) -> bytes:
    """Deterministic bytes the tests can recompute."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


async def _download(scope: dict[str, Any], receive: Any, send: Any) -> None:
    data = pattern(1 << 20)
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    for start in range(0, len(data), CHUNK):
        more = start + CHUNK < len(data)
        await send(
            {"type": "http.response.body", "body": data[start : start + CHUNK], "more_body": more}
        )


async def _forever(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Streams until the client goes away, then says how it learned of it."""
    await _read(receive)  # the (empty) request body
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    waiter = asyncio.ensure_future(receive())
    try:
        while not waiter.done():
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await asyncio.sleep(0.01)
    except OSError:
        pass  # send raised: the disconnect is also in receive()
    message = await asyncio.wait_for(waiter, 5)
    _say(f"forever ended with {message['type']}")


async def _extensions(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
    tls = scope["extensions"].get("tls", {})
    info = {
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "client": scope["client"],
        "server": scope["server"],
        "tls_version": tls.get("tls_version"),
        "has_cert": bool(tls.get("server_cert")),
        "host": dict(scope["headers"]).get(b"host", b"").decode(),
    }
    headers = [*TEXT, (b"trailer", b"x-checksum")]
    await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
    await send({"type": "http.response.body", "body": json.dumps(info).encode()})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})


async def _file(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.pathsend", "path": os.environ["H3_FILE"]})


async def _slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
    _say("slow request started")
    await asyncio.sleep(1.0)
    await _hello(scope, receive, send)


async def _websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": "echo:" + (message.get("text") or "")})


async def _sleepy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads nothing for a while: the upload must wait under flow control meanwhile."""
    await asyncio.sleep(1.5)
    _say("sleepy reads now")
    await _digest(scope, receive, send)


ROUTES = {
    "/sleepy": _sleepy,
    "/digest": _digest,
    "/download": _download,
    "/forever": _forever,
    "/extensions": _extensions,
    "/file": _file,
    "/slow": _slow,
}
