"""What to listen on: `ListenerSpec`s from the `server` section, without touching the OS.

`listener_specs()` turns the `server` section (and, for systemd socket activation, the
environment) into a list of specs; palfrey.plan.realize binds them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from palfrey.config.model import ServerSection

__all__ = [
    "SD_LISTEN_FDS_START",
    "ListenerError",
    "ListenerSpec",
    "listener_specs",
    "parse_bind",
    "systemd_specs",
]

SD_LISTEN_FDS_START = 3
"""First file descriptor systemd passes (sd_listen_fds(3))."""


class ListenerError(Exception):
    """A listener could not be created; the message says which one and why."""


@dataclass(frozen=True)
class ListenerSpec:
    """One listener to create. Pure data: comparing, hashing and pickling are cheap."""

    kind: Literal["tcp", "unix", "fd", "udp"]
    host: str | None = None
    port: int | None = None
    path: str | None = None
    mode: int | None = None
    fd: int | None = None
    #: The listener's own PROXY protocol mode ("?proxy=" in `server.bind`), None for the
    #: `proxy.protocol` default. Not part of the listener's identity: a reload that changes
    #: it keeps the socket.
    proxy: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = self.host or ""
        where = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        return f"udp:{where}" if self.kind == "udp" else where


# ---------------------------------------------------------------------------- pure part


def parse_bind(item: str, *, uds_mode: int = 0o666, options: bool = True) -> ListenerSpec:
    """One `server.bind` entry: "host:port", "[::1]:port", "unix:/path" or "fd://N",
    optionally followed by "?proxy=v1|v2|auto|off" (palfrey.config.binds)."""
    # Imported here: a serving process unpickles ListenerSpecs and never parses a bind.
    from palfrey.config.binds import parse_bind_text

    try:
        bind = parse_bind_text(item, options=options)
    except ValueError as exc:
        raise ListenerError(str(exc)) from None
    proxy = bind.options.get("proxy")
    if bind.kind == "unix":
        return ListenerSpec(kind="unix", path=bind.path, mode=uds_mode, proxy=proxy)
    if bind.kind == "fd":
        return ListenerSpec(kind="fd", fd=bind.fd, proxy=proxy)
    return ListenerSpec(kind="tcp", host=bind.host, port=bind.port, proxy=proxy)


def systemd_specs(environ: Mapping[str, str], pid: int | None = None) -> list[ListenerSpec]:
    """Sockets passed by systemd socket activation, per sd_listen_fds(3).

    LISTEN_PID must name this process: the variables are inherited by children, which must
    not take their parent's sockets for their own. Malformed values mean "none passed".
    """
    count, owner = environ.get("LISTEN_FDS", ""), environ.get("LISTEN_PID", "")
    if not count.isdigit() or not owner.isdigit():
        return []
    if int(owner) != (os.getpid() if pid is None else pid):
        return []
    return [ListenerSpec(kind="fd", fd=SD_LISTEN_FDS_START + i) for i in range(int(count))]


def listener_specs(
    server: ServerSection,
    environ: Mapping[str, str],
    *,
    explicit_tcp: bool,
    pid: int | None = None,
) -> list[ListenerSpec]:
    """Every listener the `server` section asks for, in a stable order.

    `uds`, `fd` and `bind` are explicit listeners; `bind` replaces host/port (its
    docstring says so), and so do `uds` and `fd` (as in uvicorn). With none of them, and
    host and port not set (`explicit_tcp` false), sockets from systemd socket activation
    are used when `systemd_socket_activation` is on and systemd passed any; otherwise
    host/port.
    """
    specs: list[ListenerSpec] = []
    if server.uds is not None:
        specs.append(ListenerSpec(kind="unix", path=str(server.uds), mode=server.uds_permissions))
    if server.fd is not None:
        specs.append(ListenerSpec(kind="fd", fd=server.fd))
    specs.extend(parse_bind(item, uds_mode=server.uds_permissions) for item in server.bind)
    if specs:
        return _unique(specs)
    if server.systemd_socket_activation and not explicit_tcp:
        activated = systemd_specs(environ, pid)
        if activated:
            return activated
    return [ListenerSpec(kind="tcp", host=server.host, port=server.port)]


def _unique(specs: list[ListenerSpec]) -> list[ListenerSpec]:
    # The same listener twice would fail with "address already in use" on our own socket,
    # a confusing message; drop the repeat instead.
    return list(dict.fromkeys(specs))
