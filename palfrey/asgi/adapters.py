"""The ASGI 2 -> ASGI 3 adapter."""

from __future__ import annotations

from palfrey.asgi.types import ASGI2App, ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGI2Adapter", "ASGI2App", "ASGI3App", "Message", "Receive", "Scope", "Send"]

ASGI3App = ASGIApp


class ASGI2Adapter:
    """Runs an ASGI 2 ("double callable") app as ASGI 3: app(scope) then (receive, send)."""

    __slots__ = ("app",)

    def __init__(self, app: ASGI2App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)
