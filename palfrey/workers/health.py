"""Liveness and readiness for orchestrators: in-app paths, a separate health listener,
and the drain delay that lets a load balancer deregister a pod before its listeners close.

Readiness turns false as soon as shutdown begins. With `server.drain_delay` set, the
server keeps accepting and serving for that long first (Kubernetes removes the pod from
its Service endpoints asynchronously after SIGTERM, so requests keep arriving for a few
seconds; closing the listeners at once refuses them).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from palfrey.config.runtime import HealthSection
    from palfrey.protocols.context import ASGIApp, Receive, Scope, Send
    from palfrey.server import Server

__all__ = [
    "HealthProtocol",
    "drain_delay",
    "health_app",
    "open_health_listener",
    "serve_health",
]

logger = logging.getLogger("palfrey.error")

DEFAULT_LIVENESS = "/healthz"
DEFAULT_READINESS = "/readyz"


def _ready(server: Server) -> bool:
    return server.started.is_set() and not server.draining and not server.state.shutting_down


def health_app(app: ASGIApp, section: HealthSection, server: Server) -> ASGIApp:
    """`app`, answering `section`'s liveness and readiness paths itself (when set)."""
    live, ready = section.liveness_path, section.readiness_path
    if live is None and ready is None:
        return app

    async def health(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path is None or path not in (live, ready):
            await app(scope, receive, send)
            return
        ok = path == live or _ready(server)
        body = b"ok\n" if ok else b"shutting down\n"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})

    return health


async def drain_delay(server: Server) -> None:
    """Mark `server` not ready and, on a real shutdown, keep serving for
    `server.drain_delay` seconds (a second Ctrl+C cuts it short)."""
    server.draining = True
    delay = server.config.server.drain_delay
    if not delay or not server.drain_delay_on_stop or server.force_exit:
        return
    logger.info("Draining: readiness fails; still accepting for %.1f s (drain_delay)", delay)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    while loop.time() < deadline and not server.force_exit:
        await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))


# -- the separate health listener ---------------------------------------------------------


class HealthProtocol(asyncio.Protocol):
    """A deliberately tiny HTTP/1.x responder for probes: one request per connection,
    GET or HEAD on the liveness or readiness path, anything else 404."""

    def __init__(self, paths: dict[str, Callable[[], bool]], limit: int = 8192) -> None:
        self.paths = paths
        self.limit = limit
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer and b"\n\n" not in self.buffer:
            if len(self.buffer) > self.limit and self.transport is not None:
                self.transport.close()
            return
        line = self.buffer.split(b"\n", 1)[0].strip().split()
        method = line[0] if line else b""
        target = line[1].decode("latin-1").split("?", 1)[0] if len(line) > 1 else ""
        check = self.paths.get(target)
        if method not in (b"GET", b"HEAD"):
            status, body = "405 Method Not Allowed", b"method not allowed\n"
        elif check is None:
            status, body = "404 Not Found", b"not found\n"
        elif check():
            status, body = "200 OK", b"ok\n"
        else:
            status, body = "503 Service Unavailable", b"unavailable\n"
        head = (
            f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\ncache-control: no-store\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        if self.transport is not None:
            self.transport.write(head + (b"" if method == b"HEAD" else body))
            self.transport.close()


def open_health_listener(section: HealthSection, backlog: int = 128) -> socket.socket:
    """Bind `health.listener` (which must be set)."""
    from palfrey.build.listeners import bind, parse_bind

    assert section.listener is not None
    return bind(parse_bind(section.listener), backlog)


async def serve_health(
    sock: socket.socket,
    section: HealthSection,
    *,
    live: Callable[[], bool],
    ready: Callable[[], bool],
) -> asyncio.AbstractServer:
    """Serve the health listener on the running loop until the returned server closes."""
    paths = {
        section.liveness_path or DEFAULT_LIVENESS: live,
        section.readiness_path or DEFAULT_READINESS: ready,
    }
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HealthProtocol(paths), sock=sock)
    logger.info("Health endpoints on %s (%s)", _where(sock), ", ".join(sorted(paths)))
    return server


def _where(sock: socket.socket) -> str:
    from palfrey.build.listeners import describe

    return describe(sock)
