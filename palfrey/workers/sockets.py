"""Listening sockets kept across reloads: bound once, reused when a new Config asks for
the same listener, handed to workers (spawn) and across a re-exec (single process).

A listener is identified by its `ListenerSpec` (host/port, UNIX path, fd). A reload that
keeps a spec keeps its socket, so the kernel's accept queue is never closed and no
connection is refused; a new spec is bound before any worker uses it, and a spec that is
gone is closed only once no worker serves it any more.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, MutableMapping

from palfrey.plan.listeners import ListenerError, ListenerSpec
from palfrey.plan.plan import Plan
from palfrey.plan.realize import bind, close_listeners

__all__ = ["HANDOFF_ENV", "ListenerSet", "adopt_handoff", "handoff_env", "reusable"]

HANDOFF_ENV = "_PALFREY_LISTENERS"
"""Set across a single-process re-exec: JSON {listener spec: inherited fd}. The leading
underscore keeps it out of the PALFREY_* configuration namespace."""


class ListenerSet:
    """The listeners a Plan asks for, as {spec: socket}, in the plan's order."""

    def __init__(self, sockets: Mapping[ListenerSpec, socket.socket]) -> None:
        self.by_spec = dict(sockets)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self.by_spec.values())

    @classmethod
    def open(
        cls, plan: Plan, *, reuse: Mapping[str, socket.socket] | None = None
    ) -> tuple[ListenerSet, list[socket.socket]]:
        """Sockets for `plan`: reused from `reuse` (keyed by `str(spec)`) when the spec
        matches, else bound.

        Returns the set and the sockets bound just now (close those to undo). Raises
        ListenerError, having closed whatever it bound.
        """
        specs = [listener.spec for listener in plan.listeners]
        reuse = reuse or {}
        opened: dict[ListenerSpec, socket.socket] = {}
        fresh: list[socket.socket] = []
        try:
            for spec in specs:
                if str(spec) in reuse:
                    sock = reuse[str(spec)]
                    sock.listen(plan.backlog)  # a changed backlog applies at once
                else:
                    sock = bind(spec, plan.backlog)
                    fresh.append(sock)
                opened[spec] = sock
        except BaseException:
            close_listeners(fresh)
            raise
        return cls(opened), fresh

    def close_except(self, keep: ListenerSet | None = None) -> None:
        """Close every socket not also in `keep`."""
        kept = set() if keep is None else {id(sock) for sock in keep.by_spec.values()}
        close_listeners(sock for sock in self.by_spec.values() if id(sock) not in kept)


def handoff_env(listeners: ListenerSet) -> dict[str, str]:
    """The environment entry that lets a re-exec'd Palfrey adopt these sockets."""
    table = {}
    for spec, sock in listeners.by_spec.items():
        sock.set_inheritable(True)
        table[str(spec)] = sock.fileno()
    return {HANDOFF_ENV: json.dumps(table)}


def adopt_handoff(environ: MutableMapping[str, str]) -> dict[str, socket.socket]:
    """Sockets inherited across a re-exec, keyed by `str(spec)`, to pass as `reuse=`.
    Removes the variable, so the app's own child processes do not see it."""
    raw = environ.pop(HANDOFF_ENV, None)
    if not raw:
        return {}
    adopted: dict[str, socket.socket] = {}
    for text, fd in json.loads(raw).items():
        try:
            adopted[text] = bind(ListenerSpec(kind="fd", fd=int(fd)))
        except (ListenerError, ValueError):
            continue
    return adopted


def reusable(listeners: ListenerSet) -> dict[str, socket.socket]:
    """`listeners` as a `reuse=` mapping."""
    return {str(spec): sock for spec, sock in listeners.by_spec.items()}
