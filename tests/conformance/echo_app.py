"""The app every conformance server runs: it records each request it is called for and
echoes it back, so a test can tell exactly which requests the server let through."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    http_version: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Recorder:
    """Thread-safe log of the requests the app was called for (the server runs in
    another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served: list[Served] = []

    def add(self, served: Served) -> None:
        with self._lock:
            self._served.append(served)

    def clear(self) -> None:
        with self._lock:
            self._served.clear()

    def snapshot(self) -> tuple[Served, ...]:
        with self._lock:
            return tuple(self._served)

    def paths(self) -> tuple[str, ...]:
        return tuple(served.path for served in self.snapshot())


class EchoApp:
    """200 with body f"{method} {path} {http_version} {len(body)}\\n" + the request body."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path, version = scope["method"], scope["path"], scope["http_version"]
        headers = tuple((bytes(name), bytes(value)) for name, value in scope["headers"])
        # Recorded on entry, before the body: a smuggled request counts even if it fails.
        self.recorder.add(Served(method, path, version, headers))
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        payload = f"{method} {path} {version} {len(body)}\n".encode("latin-1") + body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(payload)).encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
