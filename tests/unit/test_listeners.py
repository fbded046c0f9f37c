"""Listener specs (pure) and binding real sockets on port 0 / temporary paths."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palfrey.config.model import ServerSection
from palfrey.plan.listeners import (
    ListenerError,
    ListenerSpec,
    listener_specs,
    parse_bind,
    systemd_specs,
)
from palfrey.plan.realize import bind, bind_all, close_listeners, describe

HAS_IPV6 = socket.has_ipv6
try:
    socket.socket(socket.AF_INET6).close()
except OSError:
    HAS_IPV6 = False


def _specs(environ: dict[str, str] | None = None, **values: Any) -> list[ListenerSpec]:
    """The listeners of a validated server section, as the plan derives them."""
    section = ServerSection(**values)
    explicit = bool({"host", "port"} & section.model_fields_set)
    return listener_specs(section, environ or {}, explicit_tcp=explicit)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="pf") as name:
        yield Path(name)


# ------------------------------------------------------------------------------- specs


def test_default_is_host_port() -> None:
    assert _specs() == [ListenerSpec(kind="tcp", host="127.0.0.1", port=8000)]


def test_uds_replaces_tcp_and_carries_mode() -> None:
    assert _specs(uds="/run/app.sock", uds_permissions="660") == [
        ListenerSpec(kind="unix", path="/run/app.sock", mode=0o660)
    ]


def test_fd() -> None:
    assert _specs(fd=5) == [ListenerSpec(kind="fd", fd=5)]


@pytest.mark.parametrize(
    ("item", "spec"),
    [
        ("0.0.0.0:80", ListenerSpec(kind="tcp", host="0.0.0.0", port=80)),
        ("[::1]:8443", ListenerSpec(kind="tcp", host="::1", port=8443)),
        ("[::]:0", ListenerSpec(kind="tcp", host="::", port=0)),
        ("localhost:8000", ListenerSpec(kind="tcp", host="localhost", port=8000)),
        ("unix:/tmp/a.sock", ListenerSpec(kind="unix", path="/tmp/a.sock", mode=0o666)),
        ("fd://3", ListenerSpec(kind="fd", fd=3)),
    ],
)
def test_parse_bind(item: str, spec: ListenerSpec) -> None:
    assert parse_bind(item) == spec


@pytest.mark.parametrize("item", ["unix:", "fd://x", "nohost", ":80", "host:99999", "host:"])
def test_parse_bind_rejects(item: str) -> None:
    with pytest.raises(ListenerError):
        parse_bind(item)


def test_bind_list_replaces_host_port_and_dedupes() -> None:
    assert _specs(bind=("127.0.0.1:0", "unix:/tmp/x.sock", "127.0.0.1:0")) == [
        ListenerSpec(kind="tcp", host="127.0.0.1", port=0),
        ListenerSpec(kind="unix", path="/tmp/x.sock", mode=0o666),
    ]


def test_spec_str() -> None:
    assert str(ListenerSpec(kind="tcp", host="::1", port=80)) == "[::1]:80"
    assert str(ListenerSpec(kind="tcp", host="1.2.3.4", port=80)) == "1.2.3.4:80"
    assert str(ListenerSpec(kind="unix", path="/a")) == "unix:/a"
    assert str(ListenerSpec(kind="fd", fd=4)) == "fd://4"


def test_systemd_specs() -> None:
    environ = {"LISTEN_FDS": "2", "LISTEN_PID": "42"}
    assert systemd_specs(environ, pid=42) == [
        ListenerSpec(kind="fd", fd=3),
        ListenerSpec(kind="fd", fd=4),
    ]
    assert systemd_specs(environ, pid=43) == []  # inherited by a child: not ours
    assert systemd_specs({"LISTEN_FDS": "x", "LISTEN_PID": "42"}, pid=42) == []
    assert systemd_specs({"LISTEN_FDS": "1"}, pid=42) == []


def test_systemd_used_only_without_explicit_listener() -> None:
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    assert _specs(environ) == [ListenerSpec(kind="fd", fd=3)]
    assert _specs(environ, port=9000)[0].kind == "tcp"
    assert _specs(environ, uds="/a.sock")[0].kind == "unix"
    assert _specs(environ, systemd_socket_activation=False)[0].kind == "tcp"


def test_specs_pickle_and_hash() -> None:
    import pickle

    spec = ListenerSpec(kind="tcp", host="::", port=0)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert len({spec, ListenerSpec(kind="tcp", host="::", port=0)}) == 1


# ------------------------------------------------------------------------------ binding


def _roundtrip(sock: socket.socket, family: int, address: object) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(address)
        sock.setblocking(True)
        sock.settimeout(5)
        conn, _ = sock.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"


def test_bind_tcp_ipv4() -> None:
    sock = bind(ListenerSpec(kind="tcp", host="127.0.0.1", port=0), 16)
    try:
        assert sock.family == socket.AF_INET
        assert sock.getblocking() is False
        assert sock.get_inheritable() is True
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        port = sock.getsockname()[1]
        assert describe(sock) == f"http://127.0.0.1:{port}"
        assert describe(sock, tls=True) == f"https://127.0.0.1:{port}"
        _roundtrip(sock, socket.AF_INET, ("127.0.0.1", port))
    finally:
        close_listeners([sock])


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6")
def test_bind_tcp_ipv6_dual_stack() -> None:
    sock = bind(ListenerSpec(kind="tcp", host="::", port=0), 16)
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = sock.getsockname()[1]
        assert describe(sock) == f"http://[::]:{port}"
        _roundtrip(sock, socket.AF_INET, ("127.0.0.1", port))  # IPv4 through "::"
    finally:
        close_listeners([sock])


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6")
def test_bind_tcp_ipv6_loopback() -> None:
    try:
        sock = bind(ListenerSpec(kind="tcp", host="::1", port=0), 16)
    except ListenerError as exc:  # a container with IPv6 disabled on lo
        pytest.skip(str(exc))
    try:
        _roundtrip(sock, socket.AF_INET6, ("::1", sock.getsockname()[1]))
    finally:
        close_listeners([sock])


def test_address_in_use_is_a_clear_error() -> None:
    first = bind(ListenerSpec(kind="tcp", host="127.0.0.1", port=0), 16)
    port = first.getsockname()[1]
    try:
        with pytest.raises(ListenerError, match=rf"^address already in use: 127.0.0.1:{port}$"):
            bind(ListenerSpec(kind="tcp", host="127.0.0.1", port=port), 16)
    finally:
        close_listeners([first])


def test_unresolvable_host() -> None:
    with pytest.raises(ListenerError, match=r"cannot resolve the host of no-such-host\.invalid:0"):
        bind(ListenerSpec(kind="tcp", host="no-such-host.invalid", port=0), 16)


def test_unix_socket_mode_connect_and_unlink(short_tmp: Path) -> None:
    path = short_tmp / "app.sock"
    sock = bind(ListenerSpec(kind="unix", path=str(path), mode=0o600), 16)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert describe(sock) == f"unix:{path}"
        _roundtrip(sock, socket.AF_UNIX, str(path))
    finally:
        close_listeners([sock])
    assert not path.exists()


def test_unix_stale_socket_is_replaced(short_tmp: Path) -> None:
    path = short_tmp / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: stale
    sock = bind(ListenerSpec(kind="unix", path=str(path), mode=0o666), 16)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        _roundtrip(sock, socket.AF_UNIX, str(path))
    finally:
        close_listeners([sock])


def test_unix_live_socket_is_not_stolen(short_tmp: Path) -> None:
    path = short_tmp / "live.sock"
    live = bind(ListenerSpec(kind="unix", path=str(path), mode=0o666), 16)
    try:
        with pytest.raises(ListenerError, match="address already in use: unix:"):
            bind(ListenerSpec(kind="unix", path=str(path), mode=0o666), 16)
        assert path.exists()
    finally:
        close_listeners([live])


def test_unix_path_that_is_a_file_is_kept(short_tmp: Path) -> None:
    path = short_tmp / "data.txt"
    path.write_text("precious")
    with pytest.raises(ListenerError, match="exists and is not a socket"):
        bind(ListenerSpec(kind="unix", path=str(path), mode=0o666), 16)
    assert path.read_text() == "precious"


def test_unix_path_too_long() -> None:
    with pytest.raises(ListenerError, match="unix:/"):
        bind(ListenerSpec(kind="unix", path="/tmp/" + "x" * 200, mode=0o666), 16)


def test_close_does_not_unlink_a_replacement(short_tmp: Path) -> None:
    path = short_tmp / "swap.sock"
    old = bind(ListenerSpec(kind="unix", path=str(path), mode=0o666), 16)
    os.unlink(path)
    new = socket.socket(socket.AF_UNIX)
    new.bind(str(path))  # another server took the path meanwhile
    try:
        close_listeners([old])
        assert path.exists()
    finally:
        new.close()


def test_fd_is_adopted() -> None:
    original = socket.create_server(("127.0.0.1", 0))
    port = original.getsockname()[1]
    fd = os.dup(original.fileno())
    original.close()
    sock = bind(ListenerSpec(kind="fd", fd=fd), 16)
    try:
        assert sock.family == socket.AF_INET
        assert sock.fileno() == fd
        _roundtrip(sock, socket.AF_INET, ("127.0.0.1", port))
    finally:
        close_listeners([sock])


def test_fd_bound_but_not_listening_gets_listen() -> None:
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    sock = bind(ListenerSpec(kind="fd", fd=raw.detach()), 16)
    try:
        _roundtrip(sock, socket.AF_INET, ("127.0.0.1", port))
    finally:
        close_listeners([sock])


def test_fd_errors(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as file, pytest.raises(ListenerError, match="is not a socket"):
        bind(ListenerSpec(kind="fd", fd=file.fileno()), 16)
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(ListenerError, match="is not open"):
        bind(ListenerSpec(kind="fd", fd=read_end), 16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ListenerError, match="not a stream"):
            bind(ListenerSpec(kind="fd", fd=udp.fileno()), 16)
        assert udp.fileno() >= 0  # still open: not ours to close
    finally:
        udp.close()


def test_bind_all_several_and_cleanup_on_failure(short_tmp: Path) -> None:
    taken = bind(ListenerSpec(kind="tcp", host="127.0.0.1", port=0), 16)
    taken_port = taken.getsockname()[1]
    path = short_tmp / "several.sock"
    try:
        sockets = bind_all(_specs(bind=["127.0.0.1:0", f"unix:{path}"]), 16)
        assert [s.family for s in sockets] == [socket.AF_INET, socket.AF_UNIX]
        close_listeners(sockets)
        assert not path.exists()
        bad = _specs(bind=[f"unix:{path}", f"127.0.0.1:{taken_port}"])
        with pytest.raises(ListenerError, match="address already in use"):
            bind_all(bad, 16)
        assert not path.exists()  # the listener bound first was closed and removed
    finally:
        close_listeners([taken])
