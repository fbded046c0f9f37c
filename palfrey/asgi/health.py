"""Liveness and readiness paths answered in front of the app, for orchestrator probes.

The answer comes from the serving process's event loop without calling the app, so a
liveness probe also proves the loop is responsive. Readiness turns false (503) from the
moment shutdown begins, so a load balancer stops sending new requests during the drain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from palfrey.asgi.settings import HealthPaths
    from palfrey.asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["health_app"]


def health_app(app: ASGIApp, paths: HealthPaths, ready: Callable[[], bool]) -> ASGIApp:
    """`app`, answering the liveness and readiness paths itself (when set)."""
    live, readiness = paths.liveness, paths.readiness
    if live is None and readiness is None:
        return app

    async def health(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path is None or path not in (live, readiness):
            await app(scope, receive, send)
            return
        ok = path == live or ready()
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
