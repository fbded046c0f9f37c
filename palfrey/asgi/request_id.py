"""Request ids (`request_id` section): one per HTTP request and WebSocket handshake.

The id is the request's `header` (X-Request-ID by default) when the connection's peer is
a trusted proxy (proxy.forwarded_allow_ips): a proxy that made or forwarded an id keeps
one id across the hops. From any other peer the header is ignored, so a client cannot
pick ids that collide with other requests' in the logs. Otherwise it is 32 random hex
digits. It is stored in `scope["state"]["request_id"]` (Starlette and FastAPI:
`request.state.request_id`), shown by the access log's `request_id` field, and, with
`response_header`, sent back by the `echo_request_id` middleware.

The id is set by the scope hook (`ScopeHook`), which runs where the proxy headers are
applied, before the scope reaches the app: the trust decision needs the peer as it
connected, before X-Forwarded-For replaces the client.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from palfrey.asgi.proxy_headers import TrustedProxies
    from palfrey.asgi.settings import RequestIdSettings
    from palfrey.asgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_LENGTH", "ScopeHook", "echo_request_id", "new_id", "scope_hook"]

MAX_LENGTH = 128
"""Longest id taken from a proxy; a longer one is replaced (logs, headers stay bounded)."""

_pool = ""
_taken = 0


def new_id() -> str:
    """32 random hex digits from the OS's random source (128 bits: no collisions, and
    not predictable from ids a client has seen), read 64 ids at a time."""
    global _pool, _taken
    start = _taken
    if start >= len(_pool):
        _pool, start = os.urandom(1024).hex(), 0
    _taken = start + 32
    return _pool[start : start + 32]


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = "", 0  # a forked child must not repeat its parent's ids


os.register_at_fork(after_in_child=_forget_pool)


def _acceptable(value: bytes) -> bool:
    # Visible ASCII only (RFC 9110 §5.5 VCHAR, no spaces): safe in a log line and a header.
    return 0 < len(value) <= MAX_LENGTH and all(0x21 <= byte <= 0x7E for byte in value)


ScopeHook = Callable[["Scope"], None]


def scope_hook(
    proxies: TrustedProxies | None,
    request_ids: RequestIdSettings | None,
    trusted: TrustedProxies | None,
    *,
    record_peer: bool,
) -> ScopeHook | None:
    """The one function every new scope passes through (None: nothing to do): apply the
    proxy headers, remember the peer they replaced (`record_peer`, for the access log's
    peer fields) and set the request id."""
    apply = proxies.apply if proxies is not None else None
    if request_ids is None and not (record_peer and apply is not None):
        return apply
    header = request_ids.header if request_ids is not None else None

    def hook(scope: Scope) -> None:
        peer = scope["client"]
        if apply is not None:
            apply(scope)
            if record_peer and scope["client"] is not peer:
                # The connection's peer, before X-Forwarded-For replaced the client (the
                # extensions dict is the connection's: copied, not changed).
                scope["extensions"] = {**scope["extensions"], "palfrey.peer": peer}
        if request_ids is None:
            return
        found = None
        if header is not None and trusted is not None:
            for name, value in scope["headers"]:
                if name == header:
                    if _acceptable(value) and trusted.is_trusted(peer[0] if peer else None):
                        found = value.decode("ascii")
                    break
        scope["state"]["request_id"] = found or new_id()

    return hook


def echo_request_id(app: ASGIApp, header: bytes) -> ASGIApp:
    """`app`, with the request id sent back in `header` on every response and WebSocket
    accept."""

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        request_id = state.get("request_id") if state else None
        if request_id is None or scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        field = (header, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", ()), field]}
            await send(message)

        await app(scope, receive, send_with_id)

    return echo
