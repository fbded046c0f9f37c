"""Plans and protocol settings for tests, made the way the server makes them: from a
validated Config, through plan(). Tests never spell defaults of their own."""

from __future__ import annotations

import dataclasses
from typing import Any

from palfrey.asgi.types import ASGIApp
from palfrey.config import load_config
from palfrey.plan.plan import Plan, plan
from palfrey.protocols.context import ConnectionContext
from palfrey.protocols.http11_response import DefaultHeaders
from palfrey.protocols.settings import HTTP2Settings


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


def h2_settings(**changes: Any) -> HTTP2Settings:
    """The HTTP/2 settings of `palfrey --http h2`, with `changes`."""
    settings = make_plan(["main:app", "--http", "h2"]).connections.http2
    assert settings is not None
    return dataclasses.replace(settings, **changes)
