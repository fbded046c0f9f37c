"""The app the observability tests serve (as `observability_app:app`, or imported).

/slow sleeps 50 ms, /wait?SECONDS sleeps that long, /echo returns the body with an
`x-out` response header, /id returns the request id from scope["state"], /status/NNN
answers NNN, WebSocket echoes.
"""

from __future__ import annotations

import asyncio
from typing import Any

TEXT = [(b"content-type", b"text/plain")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if kind == "websocket":
        await _echo_websocket(receive, send)
        return
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status, headers = 200, list(TEXT)
    if path == "/slow":
        await asyncio.sleep(0.05)
        body = b"slow"
    elif path == "/wait":
        await asyncio.sleep(float(scope["query_string"] or b"2"))
        body = b"waited"
    elif path == "/echo":
        headers.append((b"X-Out", b"yes"))
    elif path == "/id":
        body = str(scope["state"].get("request_id")).encode()
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
    else:
        body = b"Hello, world!"
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _echo_websocket(receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
