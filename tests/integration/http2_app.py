"""The ASGI app the HTTP/2 tests serve: one endpoint per behaviour under test."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

EVENTS: list[str] = []  # what the app observed (disconnects), for assertions
FILE_PATH: list[str] = []  # the file /file sends (set by a test)

TEXT = [(b"content-type", b"text/plain")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path = scope["path"]
    handler = ROUTES.get(path.split("/")[1] if path.count("/") > 1 else path, _hello)
    await handler(scope, receive, send)


async def _read(receive: Any) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    text = f"{scope['http_version']} {scope['method']} {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": text})


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = await _read(receive)
    digest = hashlib.sha256(body).hexdigest().encode()
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": b"%d %s" % (len(body), digest)})


async def _download(scope: dict[str, Any], receive: Any, send: Any) -> None:
    size = int(scope["query_string"] or b"0")
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    chunk = bytes(range(256)) * 256  # 64 KiB, a known pattern
    sent = 0
    while sent < size:
        part = chunk[: min(len(chunk), size - sent)]
        sent += len(part)
        await send({"type": "http.response.body", "body": part, "more_body": sent < size})


async def _endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    try:
        while True:
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await asyncio.sleep(0.005)
    except OSError:
        EVENTS.append("send-failed")
    message = await receive()
    EVENTS.append(message["type"])


async def _trailers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": TEXT, "trailers": True})
    await send({"type": "http.response.body", "body": b"part1 ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part2"})
    await send(
        {
            "type": "http.response.trailers",
            "headers": [(b"x-checksum", b"abc123")],
            "more_trailers": False,
        }
    )


async def _hint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": b"hinted"})


async def _file(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.pathsend", "path": FILE_PATH[0]})


async def _sleep(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asyncio.sleep(float(scope["query_string"] or b"0.5"))
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": b"slept"})


async def _websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


ROUTES = {
    "echo": _echo,
    "download": _download,
    "endless": _endless,
    "trailers": _trailers,
    "hint": _hint,
    "file": _file,
    "sleep": _sleep,
    "/echo": _echo,
    "/download": _download,
    "/endless": _endless,
    "/trailers": _trailers,
    "/hint": _hint,
    "/file": _file,
    "/sleep": _sleep,
}
