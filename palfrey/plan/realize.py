"""realize(plan): the side effects of serving, in one place.

Everything a Plan decided is made real here, in the process that serves it: listening
sockets bound or adopted, SSLContexts built, the protocol stack imported, logging
applied, the allocator tuned and the env file exported. Nothing here decides anything:
a question this module would have to answer belongs in palfrey.plan.plan.

Every OS failure of a listener becomes a `ListenerError` whose message a person can act
on ("address already in use: 127.0.0.1:8000"), never a traceback. Sockets are created in
the process that reads the config (the supervisor when there are workers) and are
inheritable, so workers share them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from palfrey.plan.listeners import ListenerError, ListenerSpec

if TYPE_CHECKING:
    import asyncio
    import ssl

    from palfrey.plan.plan import ConnectionPlan, ListenerPlan, Plan
    from palfrey.protocols.context import ConnectionContext
    from palfrey.transports.quic_aioquic import QuicEndpoint

__all__ = [
    "adopt_udp",
    "bind",
    "bind_all",
    "bind_quic",
    "bind_udp",
    "close_listeners",
    "describe",
    "describe_udp",
    "export_env_file",
    "protocol_factory",
    "quic_endpoints",
    "ssl_contexts",
]

ProtocolFactory = Callable[["ConnectionContext"], "asyncio.Protocol"]


# -- the process ------------------------------------------------------------------------


_INJECTED: dict[str, str] = {}
"""Variables this process took from the env file (name -> value), so that a reload can
tell them from the operator's own environment."""


def export_env_file(plan: Plan) -> None:
    """The app sees the env file's variables too; ones already set win (as uvicorn).

    Called again with a reloaded plan, it first takes back what the previous call set
    (where the value is still the one it set), so an edited env file applies."""
    for name, value in list(_INJECTED.items()):
        if os.environ.get(name) == value:
            del os.environ[name]
    _INJECTED.clear()
    if plan.env_file is None:
        return
    from dotenv import dotenv_values

    for name, found in dotenv_values(plan.env_file).items():
        if found is not None and name not in os.environ:
            os.environ[name] = _INJECTED[name] = found


def operator_environ() -> dict[str, str]:
    """The environment as it was given to Palfrey: without what the env file added. A
    reload reads the layers from this, so the env file's new values are not shadowed by
    its old ones."""
    return {name: value for name, value in os.environ.items() if _INJECTED.get(name) != value}


def apply_logging(plan: Plan) -> None:
    from palfrey.logging import configure_logging

    configure_logging(plan.logging)


def tune_allocator(plan: Plan) -> None:
    from palfrey.plan.malloc import apply_mmap_threshold, apply_top_pad

    apply_top_pad(plan.server.malloc_top_pad)
    apply_mmap_threshold(plan.server.malloc_mmap_threshold)


# -- the protocol stack -----------------------------------------------------------------


def protocol_factory(connections: ConnectionPlan) -> ProtocolFactory:
    """The asyncio protocol class (or factory) for every accepted connection."""
    http1: ProtocolFactory
    if connections.http1 == "httptools":
        from palfrey.protocols.http11_httptools import HTTPToolsConnection

        http1 = HTTPToolsConnection
    else:
        from palfrey.protocols.http11_h11 import H11Connection

        http1 = H11Connection
    if connections.http2 is None:
        return http1
    from palfrey.protocols.negotiation import negotiating

    websocket = connections.websocket
    return negotiating(connections.http2, websocket if websocket.engine else None, http1)


def ssl_contexts(plan: Plan) -> dict[ListenerPlan, ssl.SSLContext | None]:
    """One SSLContext per listener that speaks TLS (shared by listeners with the same TLS
    settings and ALPN list). Raises TLSConfigError."""
    from palfrey.plan.tls import create_ssl_context

    built: dict[Any, ssl.SSLContext] = {}
    contexts: dict[ListenerPlan, ssl.SSLContext | None] = {}
    for listener in plan.listeners:
        if listener.tls is None:
            contexts[listener] = None
            continue
        key = (listener.tls, listener.alpn)
        if key not in built:
            built[key] = create_ssl_context(listener.tls, listener.alpn)
        contexts[listener] = built[key]
    return contexts


def quic_endpoints(
    plan: Plan, ctx: ConnectionContext, *, slot: int = 0, marker: int = 0, reset_key: bytes = b""
) -> Callable[[tuple[str, int], Callable[[], bool]], QuicEndpoint]:
    """A factory of the DatagramProtocol serving HTTP/3 on one UDP socket (given the
    socket's address and whether new connections are accepted), with the QUIC TLS
    configuration built once. `slot` and `marker` go into the connection IDs (workers);
    `reset_key` derives their stateless reset tokens.
    Raises TLSConfigError."""
    from palfrey.plan.tls import create_quic_configuration
    from palfrey.protocols.http3_aioquic import endpoint
    from palfrey.transports.quic_aioquic import Steering

    settings = plan.connections.http3
    assert settings is not None
    assert plan.tls is not None
    configuration = create_quic_configuration(plan.tls, settings)
    steering = Steering(slot, marker, reset_key)

    def make(server: tuple[str, int], accepting: Callable[[], bool]) -> QuicEndpoint:
        return endpoint(
            ctx=ctx,
            settings=settings,
            configuration=configuration,
            steering=steering,
            server=server,
            accepting=accepting,
        )

    return make


# -- listening sockets ------------------------------------------------------------------


def bind_all(specs: Iterable[ListenerSpec], backlog: int) -> list[socket.socket]:
    """Bind every listener; on any failure close those already bound."""
    sockets: list[socket.socket] = []
    try:
        for spec in specs:
            sockets.append(bind(spec, backlog))
    except BaseException:
        close_listeners(sockets)
        raise
    return sockets


# UNIX sockets this process created -> (path, pid, device, inode). Keyed by the socket
# object because the event loop may already have closed (or, uvloop, detached) it when
# close_listeners() runs, after which the socket cannot tell its own path. close_listeners()
# unlinks only these, only in the creating process (a forked worker closing its copy must
# not remove the supervisor's socket), and only while the file is still the one we bound
# (a replacement server may have bound a fresh socket at the same path meanwhile).
_OWNED: weakref.WeakKeyDictionary[socket.socket, tuple[str, int, int, int]] = (
    weakref.WeakKeyDictionary()
)


def bind(spec: ListenerSpec, backlog: int = 2048) -> socket.socket:
    """Create, bind and listen on one listener: non-blocking and inheritable."""
    if spec.kind == "tcp":
        sock = _bind_tcp(spec, backlog)
    elif spec.kind == "unix":
        sock = _bind_unix(spec, backlog)
    else:
        sock = _adopt_fd(spec, backlog)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def close_listeners(sockets: Iterable[socket.socket]) -> None:
    """Close listeners, removing the UNIX socket files this process created (also when
    the socket was already closed by the event loop)."""
    for sock in sockets:
        owner = _OWNED.pop(sock, None)
        sock.close()
        if owner is not None:
            _unlink_owned(*owner)


def describe(sock: socket.socket, *, tls: bool = False) -> str:
    """A URL-ish address for startup logs: "http://127.0.0.1:8000", "unix:/run/app.sock"."""
    scheme = "https" if tls else "http"
    if sock.family == socket.AF_INET:
        host, port = sock.getsockname()[:2]
        return f"{scheme}://{host}:{port}"
    if sock.family == socket.AF_INET6:
        host, port = sock.getsockname()[:2]
        return f"{scheme}://[{host}]:{port}"
    path = _unix_path(sock)
    if path is not None:
        return f"unix:{path}"
    return f"fd://{sock.fileno()}"


def _bind_tcp(spec: ListenerSpec, backlog: int) -> socket.socket:
    host, port = spec.host or "", spec.port or 0
    # A ":" can only appear in an IPv6 literal; everything else (IPv4, names) is IPv4,
    # as in uvicorn. Names resolve to their first IPv4 address.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenerError(f"cannot create a socket for {spec}: {_reason(exc)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            # "::" means every address; with V6ONLY off it takes IPv4 too (as ::ffff:a.b.c.d),
            # which is what people expect from "all addresses".
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Accepted sockets inherit TCP_NODELAY on Linux; small responses go out at once.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenerError(_bind_message(spec, exc)) from None
    return sock


UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF asked for QUIC sockets: datagrams that arrive while the event loop is busy
wait here instead of being dropped (the kernel caps it at net.core.rmem_max)."""


def bind_udp(
    spec: ListenerSpec, port: int | None = None, *, reuseport: bool = False
) -> socket.socket:
    """A bound UDP socket for a QUIC listener, non-blocking and inheritable. `port`
    overrides the spec's (the TCP sibling's bound port); `reuseport` joins a reuseport
    group (one socket per worker slot, palfrey.workers.quic_steering)."""
    host = spec.host or ""
    port = spec.port or 0 if port is None else port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = ListenerSpec(kind="udp", host=host, port=port)
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise ListenerError(f"cannot create a socket for {where}: {_reason(exc)}") from None
    try:
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenerError(_bind_message(where, exc)) from None
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def bind_quic(
    plan: Plan, tcp: list[socket.socket], *, reuseport: bool = False
) -> list[socket.socket]:
    """One UDP socket per QUIC listener of `plan`; a listener that follows a TCP port
    takes the port its TCP sibling (in `tcp`, one per plan listener) was bound to."""
    bound = {listener.spec: sock for listener, sock in zip(plan.listeners, tcp, strict=False)}
    sockets: list[socket.socket] = []
    try:
        for quic in plan.quic:
            port = quic.spec.port
            sibling = bound.get(quic.beside[0])
            if quic.follow_port and not port and sibling is not None:
                port = sibling.getsockname()[1]
            sockets.append(bind_udp(quic.spec, port, reuseport=reuseport))
    except BaseException:
        close_listeners(sockets)
        raise
    return sockets


def describe_udp(sock: socket.socket) -> str:
    """ "quic://127.0.0.1:8443 (UDP)" for startup logs."""
    host, port = sock.getsockname()[:2]
    where = f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
    return f"quic://{where} (UDP)"


def adopt_udp(fd: int) -> socket.socket:
    """A UDP socket inherited as file descriptor `fd` (a re-exec's handoff)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenerError(f"fd://{fd}: not an open socket ({_reason(exc)})") from None
    if sock.type != socket.SOCK_DGRAM:
        sock.detach()
        raise ListenerError(f"fd://{fd}: not a datagram socket")
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def _bind_unix(spec: ListenerSpec, backlog: int) -> socket.socket:
    path = spec.path or ""
    _remove_stale_socket(spec, path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # chmod between bind and listen: nobody can connect before listen(), so no client
        # ever sees the umask-derived mode.
        if spec.mode is not None:
            os.chmod(path, spec.mode)
        sock.listen(backlog)
        info = os.stat(path)
    except OSError as exc:
        sock.close()
        raise ListenerError(_bind_message(spec, exc)) from None
    _OWNED[sock] = (path, os.getpid(), info.st_dev, info.st_ino)
    return sock


def _remove_stale_socket(spec: ListenerSpec, path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenerError(f"cannot use {spec}: {_reason(exc)}") from None
    if not stat.S_ISSOCK(mode):
        raise ListenerError(f"cannot bind {spec}: the path exists and is not a socket")
    # A socket file is left behind by a server that died; but a live server may own it,
    # and unlinking would silently steal its address. Probe with a connect.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        pass  # refused (or unreachable): stale
    else:
        raise ListenerError(f"address already in use: {spec}")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ListenerError(f"cannot remove the stale socket {spec}: {_reason(exc)}") from None


def _adopt_fd(spec: ListenerSpec, backlog: int) -> socket.socket:
    fd = spec.fd if spec.fd is not None else -1
    try:
        # fileno= makes the socket module ask the OS for family, type and protocol.
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        if exc.errno == errno.ENOTSOCK:
            raise ListenerError(f"{spec}: file descriptor {fd} is not a socket") from None
        raise ListenerError(f"{spec}: file descriptor {fd} is not open ({_reason(exc)})") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()  # not ours to close
        raise ListenerError(f"{spec}: the socket is not a stream (TCP or UNIX) socket")
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            # Bound but not yet listening (some supervisors hand sockets over that way).
            sock.listen(backlog)
    except OSError as exc:
        sock.detach()
        raise ListenerError(f"{spec}: cannot listen on the socket: {_reason(exc)}") from None
    return sock


def _unix_path(sock: socket.socket) -> str | None:
    if getattr(socket, "AF_UNIX", None) is None or sock.family != socket.AF_UNIX:
        return None
    try:
        name = sock.getsockname()
    except OSError:
        return None
    if isinstance(name, bytes):
        name = name.decode(errors="surrogateescape")
    # Abstract sockets (leading NUL) and unnamed ones have no file to remove.
    return name if isinstance(name, str) and name and not name.startswith("\0") else None


def _unlink_owned(path: str, pid: int, device: int, inode: int) -> None:
    if pid != os.getpid():
        return
    try:
        info = os.lstat(path)
        if stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == (device, inode):
            os.unlink(path)
    except OSError:
        pass  # already gone, or not ours to remove any more


_BIND_ERRORS = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available on this machine",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such directory",
    errno.ENAMETOOLONG: "path too long",
}


def _bind_message(spec: ListenerSpec, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host of {spec}: {exc.strerror or exc}"
    what = _BIND_ERRORS.get(exc.errno or 0)
    if what is None:
        return f"cannot bind {spec}: {_reason(exc)}"
    message = f"{what}: {spec}"
    if (
        exc.errno in (errno.EACCES, errno.EPERM)
        and spec.kind == "tcp"
        and 0 < (spec.port or 0) < 1024
    ):
        message += " (ports below 1024 need privileges)"
    return message


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
