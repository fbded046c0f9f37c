"""Which optional library provides each backend, and what "auto" picks.

Optional backends live in extras; naming one that is not installed is a configuration
problem with the exact install command, never an ImportError traceback at first request.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from palfrey.config.model import Config
from palfrey.config.sources import Problem


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
HTTP2 = Backend("h2", "http2")
HTTP3 = Backend("aioquic", "http3")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def http1_backend(config: Config) -> str:
    """The HTTP/1.1 parser to use: "auto" prefers httptools (faster) over h11."""
    if config.http.backend != "auto":
        return config.http.backend
    return "httptools" if installed("httptools") else "h11"


def loop_name(config: Config) -> str:
    if config.server.loop != "auto":
        return config.server.loop
    return "uvloop" if installed("uvloop") else "asyncio"


def websocket_backend(config: Config) -> str:
    """ "auto" picks wsproto, then the websockets library, else WebSockets are off."""
    name = config.websocket.backend
    if name == "websockets":
        return "websockets-sansio"
    if name != "auto":
        return name
    return next((n for n, b in WEBSOCKETS.items() if installed(b.module)), "none")


def _hint(backend: Backend, what: str, key: str) -> Problem:
    command = f"pip install 'palfrey[{backend.extra}]'" if backend.extra else "pip install palfrey"
    if backend.extra == "websockets":
        command = "pip install websockets"
    return Problem(f"'{key}': {what} needs the '{backend.module}' package: {command}")


def missing_backends(config: Config) -> list[Problem]:
    """Every backend the config names explicitly that is not installed."""
    problems = []
    if config.http.backend == "httptools" and not installed("httptools"):
        problems.append(_hint(HTTP1["httptools"], "the httptools parser", "http.backend"))
    if config.server.loop == "uvloop" and not installed("uvloop"):
        problems.append(_hint(LOOPS["uvloop"], "the uvloop event loop", "server.loop"))
    ws = websocket_backend(config)
    if ws in WEBSOCKETS and not installed(WEBSOCKETS[ws].module):
        problems.append(_hint(WEBSOCKETS[ws], f"the {ws} WebSocket backend", "websocket.backend"))
    if config.http2.enabled and not installed(HTTP2.module):
        problems.append(_hint(HTTP2, "HTTP/2", "http2.enabled"))
    if config.http3.enabled and not installed(HTTP3.module):
        problems.append(_hint(HTTP3, "HTTP/3", "http3.enabled"))
    return problems
