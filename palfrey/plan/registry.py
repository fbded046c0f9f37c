"""Which optional library provides each backend, and what "auto" picks.

Optional backends live in extras; naming one that is not installed is a configuration
problem with the exact install command (palfrey.plan.check.missing_backends, run before
serving), never an ImportError traceback at first request.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    module: str
    extra: str


HTTP1 = {"httptools": Backend("httptools", "standard"), "h11": Backend("h11", "")}
LOOPS = {"uvloop": Backend("uvloop", "standard"), "asyncio": Backend("asyncio", "")}
WEBSOCKETS = {
    "wsproto": Backend("wsproto", "standard"),
    "websockets-sansio": Backend("websockets", "websockets"),
}
HTTP2 = Backend("hpack", "http2")
HTTP3 = Backend("aioquic", "http3")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def http1_backend(name: str) -> str:
    """The HTTP/1.1 parser to use: "auto" prefers httptools (faster) over h11."""
    if name != "auto":
        return name
    return "httptools" if installed("httptools") else "h11"


def loop_name(name: str) -> str:
    """The event loop to use: "auto" prefers uvloop over asyncio."""
    if name != "auto":
        return name
    return "uvloop" if installed("uvloop") else "asyncio"


def websocket_backend(name: str) -> str:
    """ "auto" picks wsproto, then the websockets library, else WebSockets are off."""
    if name == "websockets":
        return "websockets-sansio"
    if name != "auto":
        return name
    return next((n for n, b in WEBSOCKETS.items() if installed(b.module)), "none")
