"""The ASGI HTTP scope every HTTP version builds (palfrey.protocols.context.http_scope)."""

from __future__ import annotations

from typing import Any

from palfrey.protocols.context import ConnectionContext, http_scope
from tests.helpers.plans import connection_context


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


def _scope(ctx: ConnectionContext, raw_path: bytes, query: bytes = b"") -> dict[str, Any]:
    return dict(
        http_scope(
            ctx, b"GET", raw_path, query, "2", ("127.0.0.1", 80), ("10.0.0.1", 1234), "http", [], {}
        )
    )


def test_path_is_percent_decoded_as_utf8_bytes() -> None:
    ctx = connection_context(_app)
    assert _scope(ctx, b"/caf%C3%A9")["path"] == "/café"
    # Raw bytes and escapes decode together: one UTF-8 sequence split across both forms.
    assert _scope(ctx, b"/\xc3%A9")["path"] == "/é"
    assert _scope(ctx, b"/\xff")["path"] == "/\ufffd"
    scope = _scope(ctx, b"/a%20b", b"x=1")
    assert (scope["raw_path"], scope["query_string"], scope["method"]) == (b"/a%20b", b"x=1", "GET")


def test_root_path_state_copy_and_proxy_hook() -> None:
    seen: list[Any] = []
    ctx = connection_context(_app, root_path="/api", app_state={"k": 1}, proxy=seen.append)
    scope = _scope(ctx, b"/items")
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == (
        "/api",
        "/api/items",
        b"/api/items",
    )
    assert scope["state"] == {"k": 1}
    assert scope["state"] is not ctx.app_state
    assert [hooked["path"] for hooked in seen] == ["/api/items"]
