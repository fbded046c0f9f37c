"""Listening sockets: what to bind (pure `ListenerSpec`s) and binding them (side effects).

`listener_specs()` turns the `server` section (and, for systemd socket activation, the
environment) into a list of specs without touching the OS; `bind()` / `bind_listeners()`
create the sockets. Every OS failure becomes a `ListenerError` whose message a person can
act on ("address already in use: 127.0.0.1:8000"), never a traceback.

Sockets are created in the process that reads the config (the supervisor when there are
workers) and are inheritable, so workers started with fork or spawn share them.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from palfrey.config.runtime import RuntimeConfig, ServerSection

__all__ = [
    "SD_LISTEN_FDS_START",
    "ListenerError",
    "ListenerSpec",
    "bind",
    "bind_listeners",
    "close_listeners",
    "describe",
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

    kind: Literal["tcp", "unix", "fd"]
    host: str | None = None
    port: int | None = None
    path: str | None = None
    mode: int | None = None
    fd: int | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


# ---------------------------------------------------------------------------- pure part


def parse_bind(item: str, *, uds_mode: int = 0o666) -> ListenerSpec:
    """One `server.bind` entry: "host:port", "[::1]:port", "unix:/path" or "fd://N"."""
    if item.startswith("unix:"):
        path = item[len("unix:") :]
        if not path:
            raise ListenerError(f"{item!r}: a UNIX socket needs a path, as in unix:/run/app.sock")
        return ListenerSpec(kind="unix", path=path, mode=uds_mode)
    if item.startswith("fd://"):
        number = item[len("fd://") :]
        if not number.isdigit():
            raise ListenerError(f"{item!r}: expected a file descriptor number, as in fd://3")
        return ListenerSpec(kind="fd", fd=int(number))
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ListenerError(f'{item!r} is not "host:port", "[::1]:port", "unix:/path" or "fd://N"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ListenerSpec(kind="tcp", host=host, port=int(port))


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
    server: ServerSection, environ: Mapping[str, str], *, pid: int | None = None
) -> list[ListenerSpec]:
    """Every listener the `server` section asks for, in a stable order.

    `uds`, `fd` and `bind` are explicit listeners; `bind` replaces host/port (its
    docstring says so), and so do `uds` and `fd` (as in uvicorn). With none of them, and
    host and port left at their defaults, sockets from systemd socket activation are used
    when `systemd_socket_activation` is on and systemd passed any; otherwise host/port.
    """
    specs: list[ListenerSpec] = []
    if server.uds is not None:
        specs.append(ListenerSpec(kind="unix", path=str(server.uds), mode=server.uds_permissions))
    if server.fd is not None:
        specs.append(ListenerSpec(kind="fd", fd=server.fd))
    specs.extend(parse_bind(item, uds_mode=server.uds_permissions) for item in server.bind)
    if specs:
        return _unique(specs)
    explicit_tcp = bool({"host", "port"} & server.fields_set)
    if server.systemd_socket_activation and not explicit_tcp:
        activated = systemd_specs(environ, pid)
        if activated:
            return activated
    return [ListenerSpec(kind="tcp", host=server.host, port=server.port)]


def _unique(specs: list[ListenerSpec]) -> list[ListenerSpec]:
    # The same listener twice would fail with "address already in use" on our own socket,
    # a confusing message; drop the repeat instead.
    return list(dict.fromkeys(specs))


# ---------------------------------------------------------------------- side effects

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


def bind_listeners(
    config: RuntimeConfig, environ: Mapping[str, str] | None = None
) -> list[socket.socket]:
    """Bind every listener of `config`; on any failure close those already bound."""
    specs = listener_specs(config.server, os.environ if environ is None else environ)
    sockets: list[socket.socket] = []
    try:
        for spec in specs:
            sockets.append(bind(spec, config.server.backlog))
    except BaseException:
        close_listeners(sockets)
        raise
    return sockets


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
