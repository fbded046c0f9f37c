"""Plans and protocol settings for tests, made the way the server makes them: from a
validated Config, through plan(). Tests never spell defaults of their own."""

from __future__ import annotations

from typing import Any

from palfrey.asgi.types import ASGIApp
from palfrey.config import load_config
from palfrey.plan.plan import Plan, plan
from palfrey.protocols.context import ConnectionContext
from palfrey.protocols.http11_response import DefaultHeaders


def make_plan(argv: list[str] | None = None, **overrides: Any) -> Plan:
    """The plan of `palfrey ARGV` with palfrey.run()-style keyword overrides, in an empty
    environment."""
    return plan(load_config(argv or ["main:app"], environ={}, **overrides), environ={})


def connection_context(app: ASGIApp, plan_: Plan | None = None, **fields: Any) -> ConnectionContext:
    """A ConnectionContext as the Server builds it from `plan_` (default: the default
    plan), with `fields` replaced."""
    conn = (plan_ or make_plan()).connections
    values: dict[str, Any] = {
        "app": app,
        "limits": conn.limits,
        "defaults": DefaultHeaders(conn.headers),
        "websocket": conn.websocket,
        **fields,
    }
    return ConnectionContext(**values)
