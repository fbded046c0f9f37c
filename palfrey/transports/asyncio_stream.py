"""Facts about an asyncio stream transport that a request scope needs.

Read once per connection: addresses, the TLS session (for the ASGI `tls` extension) and
the socket options a server wants on every accepted connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from palfrey.transports.proxied import PROXY_EXTENSION
from palfrey.transports.tls_scope import tls_scope_extension

Address = tuple[str, int | None]


def addresses(transport: asyncio.BaseTransport) -> tuple[Address | None, Address | None]:
    """(server, client) as ASGI scopes give them; a UNIX socket server is (path, None)."""
    return _address(transport.get_extra_info("sockname")), _peer(
        transport.get_extra_info("peername")
    )


def _address(info: Any) -> Address | None:
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, (str, bytes)) and info:
        return (info.decode() if isinstance(info, bytes) else info, None)
    return None


def _peer(info: Any) -> Address | None:
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None  # UNIX socket peers have no address


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Small responses must not wait for Nagle's algorithm."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # pragma: no cover - platform dependent
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connection_extensions(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """The scope extensions a connection's transport provides: `tls` (ASGI's tls
    extension) on TLS connections, `palfrey.proxy_protocol` behind a PROXY header."""
    found: dict[str, Any] = {}
    tls = tls_extension(transport)
    if tls is not None:
        found["tls"] = tls
    proxy = transport.get_extra_info(PROXY_EXTENSION)
    if proxy is not None:
        found[PROXY_EXTENSION] = proxy
    return found


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI `tls` extension for a TLS transport, or None for cleartext."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    return tls_scope_extension(ssl_object)
