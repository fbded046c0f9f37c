"""What every connection of one Server shares: the app, limits, defaults and live counters.

Built once by the Server; a connection holds one reference to it, so accepting a
connection costs no per-connection copying of settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, unquote_to_bytes

from palfrey.asgi.types import ASGIApp, Scope
from palfrey.protocols.http11_response import DefaultHeaders
from palfrey.protocols.settings import HTTPLimits

if TYPE_CHECKING:
    from palfrey.asgi.http_cycle import HTTPCycle
    from palfrey.protocols.settings import WebSocketSettings


Observe = Callable[["HTTPCycle"], None]
"""Called once per completed HTTP response with its cycle (the access log and metrics:
palfrey.observe)."""


class Observer(Protocol):
    """What the access log and metrics are told besides completed HTTP requests."""

    def websocket(self, exchange: Any, kind: str) -> None:
        """A WebSocket handshake was answered ("handshake") or a session ended ("close");
        `exchange` is a palfrey.protocols.websocket_endpoint.WebSocketExchange."""

    def refused(self, status: int) -> None:
        """The server answered a request itself with `status` (a limit, a timeout or a
        malformed request)."""


ScopeHook = Callable[[Scope], None]
"""Rewrites a request scope in place (trusted proxy headers)."""


@dataclass
class ServerState:
    """Live, mutable counters of one server process."""

    #: Open connections (asyncio protocols, and HTTP/3 sessions): each has `shutdown()`
    #: (graceful) and `abort()`.
    connections: set[Any] = field(default_factory=set)
    cycles: set[HTTPCycle] = field(default_factory=set)
    total_requests: int = 0
    #: Called once when `total_requests` reaches the max-requests budget.
    on_budget_spent: Callable[[], None] | None = None
    request_budget: int | None = None
    shutting_down: bool = False
    #: Graceful shutdown: how long an idle keep-alive connection stays open once
    #: `shutting_down` is set, so a request already on its way is answered (with
    #: `Connection: close`) instead of meeting a closed socket (RFC 9112 §9.6). Set by
    #: Server.stop: min(keep-alive timeout, server.DRAIN_IDLE_GRACE, graceful timeout).
    drain_grace: float = 1.0
    #: Requests whose response head is held back for a first body chunk; their heads are
    #: flushed together on the next loop turn (see HTTPCycle.send).
    held_heads: list[HTTPCycle] = field(default_factory=list)

    def hold_head(self, cycle: HTTPCycle) -> None:
        """Flush `cycle`'s head on the next loop turn (a no-op by then if the body was
        sent)."""
        held = self.held_heads
        if not held:
            asyncio.get_running_loop().call_soon(self._flush_heads)
        held.append(cycle)

    def _flush_heads(self) -> None:
        held, self.held_heads = self.held_heads, []
        for cycle in held:
            cycle.flush_head()

    def count_request(self) -> None:
        self.total_requests += 1
        if self.request_budget is not None:
            self.check_budget()

    def check_budget(self) -> None:
        """Call `on_budget_spent` once `total_requests` reaches the budget."""
        if self.request_budget is not None and self.total_requests >= self.request_budget:
            self.request_budget = None
            if self.on_budget_spent is not None:
                self.on_budget_spent()


@dataclass
class ConnectionContext:
    """Settings shared by every connection of a server (read-only once serving)."""

    app: ASGIApp
    limits: HTTPLimits
    defaults: DefaultHeaders
    state: ServerState = field(default_factory=ServerState)
    root_path: str = ""
    #: Lifespan state; each request scope gets a shallow copy (ASGI lifespan §state).
    app_state: dict[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    #: Completed HTTP requests (None: no access log and no metrics, one check per request).
    observe: Observe | None = None
    #: WebSocket sessions and refused requests (set together with `observe`).
    observer: Observer | None = None
    #: Rewrites each new scope: proxy headers, request ids (palfrey.asgi.request_id).
    proxy: ScopeHook | None = None
    reset_contextvars: bool = False
    #: Extra scope["extensions"] entries advertised for every request.
    extensions: dict[str, Any] = field(default_factory=dict)
    #: WebSocket settings and backend (None: upgrade requests are served as plain HTTP).
    websocket: WebSocketSettings | None = None


_METHODS: dict[bytes, str] = {}  # bytes -> str, filled lazily (methods are a small closed set)


def http_scope(
    ctx: ConnectionContext,
    method: bytes,
    raw_path: bytes,
    query: bytes,
    http_version: str,
    server: Any,
    client: Any,
    scheme: str,
    headers: list[tuple[bytes, bytes]],
    extensions: dict[str, Any],
) -> Scope:
    """The ASGI HTTP scope of a request, for every HTTP version: the path percent-decoded
    as UTF-8, `root_path` prefixed, the lifespan state copied, trusted proxy headers
    applied."""
    if raw_path.isascii():
        path = raw_path.decode()
        if "%" in path:
            path = unquote(path)
    else:
        path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
    root = ctx.root_path
    if root:
        path = root + path
        raw_path = root.encode() + raw_path
    name = _METHODS.get(method)
    if name is None:
        name = _METHODS[method] = method.decode("ascii")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": name,
        "root_path": root,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
        "state": ctx.app_state.copy(),
        "extensions": extensions,
    }
    if ctx.proxy is not None:
        ctx.proxy(scope)
    return scope
