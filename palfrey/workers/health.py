"""The separate health listener (`health.listener`): liveness and readiness answered by
a process (the single server, or the supervisor for all its workers) on an address of
its own, outside the app's listeners. The in-app paths are palfrey.asgi.health."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from palfrey.asgi.settings import HealthPaths
    from palfrey.plan.listeners import ListenerSpec

__all__ = ["HealthProtocol", "open_health_listener", "serve_health"]

logger = logging.getLogger("palfrey.error")


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


def open_health_listener(spec: ListenerSpec, backlog: int = 128) -> socket.socket:
    """Bind the `health.listener`."""
    from palfrey.plan.realize import bind

    return bind(spec, backlog)


async def serve_health(
    sock: socket.socket,
    health: HealthPaths,
    *,
    live: Callable[[], bool],
    ready: Callable[[], bool],
) -> asyncio.AbstractServer:
    """Serve the health listener on the running loop until the returned server closes."""
    live_path, ready_path = health.for_listener()
    paths = {live_path: live, ready_path: ready}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HealthProtocol(paths), sock=sock)
    logger.info("Health endpoints on %s (%s)", _where(sock), ", ".join(sorted(paths)))
    return server


def _where(sock: socket.socket) -> str:
    from palfrey.plan.realize import describe

    return describe(sock)
