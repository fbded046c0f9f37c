"""The text form of a listener address, as `server.bind` and `health.listener` write it.

    host:port   [::1]:port   unix:/path/to.sock   fd://3
    ...?proxy=v2                       (server.bind only: per-listener options)

Pure and free of pydantic: the config model validates with it and the plan builds its
listener specs from it, so the two can never disagree about what an entry means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LISTENER_OPTIONS", "BindAddress", "parse_bind_text"]

LISTENER_OPTIONS = {"proxy": ("off", "v1", "v2", "auto")}
"""Options a `server.bind` entry may carry after "?", and their values."""

FORMS = '"host:port", "[::1]:port", "unix:/path" or "fd://N"'


@dataclass(frozen=True)
class BindAddress:
    kind: str  # "tcp", "unix" or "fd"
    host: str | None = None
    port: int | None = None
    path: str | None = None
    fd: int | None = None
    options: dict[str, str] = field(default_factory=dict)


def parse_bind_text(item: str, *, options: bool = True) -> BindAddress:
    """Read one entry; raises ValueError with a message naming the entry and the fix.
    `options=False` refuses "?..." options (listeners that have none)."""
    address, sep, query = item.partition("?")
    found = _options(item, query, allowed=options) if sep else {}
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if not path:
            raise ValueError(f"{item!r}: a UNIX socket needs a path, as in unix:/run/app.sock")
        return BindAddress(kind="unix", path=path, options=found)
    if address.startswith("fd://"):
        number = address[len("fd://") :]
        if not number.isdigit():
            raise ValueError(f"{item!r}: expected a file descriptor number, as in fd://3")
        return BindAddress(kind="fd", fd=int(number), options=found)
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{item!r} is not {FORMS}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return BindAddress(kind="tcp", host=host, port=int(port), options=found)


def _options(item: str, query: str, *, allowed: bool) -> dict[str, str]:
    if not allowed:
        raise ValueError(f"{item!r}: this listener takes no options (remove the ?...)")
    found: dict[str, str] = {}
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        choices = LISTENER_OPTIONS.get(key)
        if choices is None:
            known = ", ".join(LISTENER_OPTIONS)
            raise ValueError(f"{item!r}: unknown listener option {key!r} (known: {known})")
        if not sep or value not in choices:
            raise ValueError(f"{item!r}: {key}= takes one of {', '.join(choices)}")
        found[key] = value
    return found
