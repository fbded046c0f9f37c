"""The metrics listener: `GET /metrics` on an address of its own (`metrics.listener`).

A deliberately small HTTP/1.x responder, like the health listener: one request per
connection, GET or HEAD on /metrics, anything else 404 or 405. Scrapes are rare (every
15-60 s) and the answer is built fresh from the blocks each time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from palfrey.metrics.exposition import Scrape, render

__all__ = ["PATH", "MetricsProtocol", "serve_metrics"]

logger = logging.getLogger("palfrey.error")

PATH = "/metrics"
_LIMIT = 8192


class MetricsProtocol(asyncio.Protocol):
    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self.scrape = scrape
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            end = self.buffer.find(b"\n\n")
        if end < 0:
            if len(self.buffer) > _LIMIT and self.transport is not None:
                self.transport.close()
            return
        lines = self.buffer[:end].decode("latin-1").splitlines()
        parts = lines[0].split() if lines else []
        method = parts[0] if parts else ""
        target = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
        accept = next(
            (
                line.split(":", 1)[1].strip()
                for line in lines[1:]
                if line.lower().startswith("accept:")
            ),
            None,
        )
        self._answer(method, target, accept)

    def _answer(self, method: str, target: str, accept: str | None) -> None:
        content_type = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            status, body = "405 Method Not Allowed", b"method not allowed\n"
        elif target != PATH:
            status, body = "404 Not Found", b"not found: metrics are at /metrics\n"
        else:
            try:
                body, content_type = render(self.scrape(), accept)
                status = "200 OK"
            except Exception:  # a scrape must never take the process down
                logger.exception("Metrics exposition failed")
                status, body = "500 Internal Server Error", b"metrics exposition failed\n"
        head = (
            f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\ncache-control: no-store\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        if self.transport is not None:
            self.transport.write(head + (b"" if method == "HEAD" else body))
            self.transport.close()


async def serve_metrics(
    sock: socket.socket, scrape: Callable[[], Scrape], *, where: str
) -> asyncio.AbstractServer:
    """Serve /metrics on `sock` (bound) on the running loop until the server closes."""
    import prometheus_client  # noqa: F401 - fail here, at start-up, if it is missing

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MetricsProtocol(scrape), sock=sock)
    logger.info("Metrics on http://%s%s", where, PATH)
    return server
