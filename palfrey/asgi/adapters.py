"""ASGI type aliases shared by the adapters, and the ASGI 2 -> ASGI 3 adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGI2Adapter", "ASGI2App", "ASGI3App", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI3App = Callable[[Scope, Receive, Send], Awaitable[None]]
ASGI2App = Callable[[Scope], Callable[[Receive, Send], Awaitable[None]]]


class ASGI2Adapter:
    """Runs an ASGI 2 ("double callable") app as ASGI 3: app(scope) then (receive, send)."""

    __slots__ = ("app",)

    def __init__(self, app: ASGI2App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)
