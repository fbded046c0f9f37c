"""A transport seen through a PROXY protocol header: the client and server addresses are
the ones the load balancer named, everything else is the connection's own.

Protocols read addresses with `transport.get_extra_info("peername"/"sockname")`
(palfrey.transports.asyncio_stream.addresses), so wrapping the transport is all it takes
for scopes, access logs and proxy-header trust to see the real client. The methods on the
request path are the wrapped transport's own bound methods, set on the instance: a write
through the wrapper costs what a write through the transport costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

__all__ = ["PROXY_EXTENSION", "ProxiedTransport"]

PROXY_EXTENSION = "palfrey.proxy_protocol"
"""The extra-info key (and ASGI scope extension) holding what the PROXY header said."""

_DELEGATED = (
    "write",
    "writelines",
    "write_eof",
    "can_write_eof",
    "close",
    "abort",
    "is_closing",
    "pause_reading",
    "resume_reading",
    "is_reading",
    "set_protocol",
    "get_protocol",
    "get_write_buffer_size",
    "get_write_buffer_limits",
    "set_write_buffer_limits",
)


class ProxiedTransport(asyncio.Transport):
    """`transport` with some extra-info values replaced (peername, sockname, ...)."""

    def __init__(self, transport: asyncio.Transport, extra: Mapping[str, Any]) -> None:
        super().__init__()
        self._transport = transport
        self._overrides = dict(extra)
        for name in _DELEGATED:
            setattr(self, name, getattr(transport, name))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        # What the event loop itself reads off a transport (loop.sendfile's private
        # attributes): the wrapped transport's.
        if name == "_transport":
            raise AttributeError(name)
        return getattr(self._transport, name)
