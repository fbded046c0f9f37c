"""Listening sockets kept across reloads: bound once, reused when a new Config asks for
the same listener, handed to workers (spawn) and across a re-exec (single process).

A listener is identified by its `ListenerSpec` (host/port, UNIX path, fd). A reload that
keeps a spec keeps its socket, so the kernel's accept queue is never closed and no
connection is refused; a new spec is bound before any worker uses it, and a spec that is
gone is closed only once no worker serves it any more.

A QUIC listener (HTTP/3) is a `QuicGroup`: one UDP socket in a single process, one per
worker slot under the supervisor (palfrey.workers.quic_steering). It is kept across
reloads the same way, so datagrams of live connections keep arriving.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, MutableMapping

from palfrey.plan.listeners import ListenerError, ListenerSpec
from palfrey.plan.plan import Plan, QuicListenerPlan
from palfrey.plan.realize import adopt_udp, bind, bind_udp, close_listeners
from palfrey.workers.quic_steering import QuicGroup

__all__ = [
    "HANDOFF_ENV",
    "ListenerSet",
    "adopt_handoff",
    "handoff_env",
    "reusable",
    "reusable_quic",
]

HANDOFF_ENV = "_PALFREY_LISTENERS"
"""Set across a single-process re-exec: JSON {listener spec: inherited fd}. The leading
underscore keeps it out of the PALFREY_* configuration namespace."""


class ListenerSet:
    """The listeners a Plan asks for, as {spec: socket}, in the plan's order, and its
    QUIC listeners as {spec: QuicGroup}."""

    def __init__(
        self,
        sockets: Mapping[ListenerSpec, socket.socket],
        quic: Mapping[ListenerSpec, QuicGroup] | None = None,
    ) -> None:
        self.by_spec = dict(sockets)
        self.quic = dict(quic or {})

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self.by_spec.values())

    def quic_sockets(self, slot: int = 0) -> list[socket.socket]:
        """The UDP socket of `slot` of every QUIC listener, in the plan's order."""
        return [group.sockets[slot] for group in self.quic.values()]

    @classmethod
    def open(
        cls,
        plan: Plan,
        *,
        reuse: Mapping[str, socket.socket] | None = None,
        reuse_quic: Mapping[str, QuicGroup] | None = None,
        steered: bool = False,
    ) -> tuple[ListenerSet, list[socket.socket]]:
        """Sockets for `plan`: reused from `reuse` (keyed by `str(spec)`; an inherited
        UDP socket too) or `reuse_quic` when the spec matches, else bound. `steered`:
        QUIC groups for several workers (SO_REUSEPORT, a BPF program).

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
            quic = {
                listener.spec: _quic_group(
                    listener, opened, reuse, reuse_quic or {}, fresh, steered=steered
                )
                for listener in plan.quic
            }
        except BaseException:
            close_listeners(fresh)
            raise
        return cls(opened, quic), fresh

    def close_except(self, keep: ListenerSet | None = None) -> None:
        """Close every socket not also in `keep`."""
        kept = set() if keep is None else {id(sock) for sock in keep.all_sockets()}
        close_listeners(sock for sock in self.all_sockets() if id(sock) not in kept)

    def all_sockets(self) -> list[socket.socket]:
        return [*self.by_spec.values(), *(s for g in self.quic.values() for s in g.sockets)]


def _quic_group(
    listener: QuicListenerPlan,
    tcp: Mapping[ListenerSpec, socket.socket],
    reuse: Mapping[str, socket.socket],
    reuse_quic: Mapping[str, QuicGroup],
    fresh: list[socket.socket],
    *,
    steered: bool,
) -> QuicGroup:
    key = str(listener.spec)
    if key in reuse_quic:
        return reuse_quic[key]
    if key in reuse:
        return QuicGroup(listener.spec, [reuse[key]], steered=False)
    port = listener.spec.port
    sibling = tcp.get(listener.beside[0])
    if listener.follow_port and not port and sibling is not None:
        port = sibling.getsockname()[1]
    sock = bind_udp(listener.spec, port, reuseport=steered)
    fresh.append(sock)
    return QuicGroup(listener.spec, [sock], steered=steered)


def handoff_env(listeners: ListenerSet) -> dict[str, str]:
    """The environment entry that lets a re-exec'd Palfrey adopt these sockets."""
    table = {}
    for spec, sock in listeners.by_spec.items():
        sock.set_inheritable(True)
        table[str(spec)] = sock.fileno()
    for spec, group in listeners.quic.items():
        group.sockets[0].set_inheritable(True)
        table[str(spec)] = group.sockets[0].fileno()
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
            if text.startswith("udp:"):
                adopted[text] = adopt_udp(int(fd))
            else:
                adopted[text] = bind(ListenerSpec(kind="fd", fd=int(fd)))
        except (ListenerError, ValueError):
            continue
    return adopted


def reusable(listeners: ListenerSet) -> dict[str, socket.socket]:
    """`listeners` as a `reuse=` mapping."""
    return {str(spec): sock for spec, sock in listeners.by_spec.items()}


def reusable_quic(listeners: ListenerSet) -> dict[str, QuicGroup]:
    """`listeners`' QUIC groups as a `reuse_quic=` mapping."""
    return {str(spec): group for spec, group in listeners.quic.items()}
