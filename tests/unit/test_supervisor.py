"""Pure pieces of the process model: file watching (ConfigMap swaps), reload filters,
sd_notify, the health responder, listener reuse and in-place TLS reload."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

import pytest

from palfrey.plan.plan import Plan, ReloadPlan
from palfrey.workers import sd_notify
from palfrey.workers.health import HealthProtocol
from palfrey.workers.reload import PathFilter
from palfrey.workers.sockets import ListenerSet, adopt_handoff, handoff_env, reusable
from palfrey.workers.supervisor import describe_exit, restart_needed
from palfrey.workers.watch import FileWatch
from tests.helpers.plans import make_plan


def load_config(argv: list[str]) -> Plan:
    """A validated config as the process model receives it: its plan."""
    return make_plan(argv)


def _publish(directory: Path, version: str, text: str) -> None:
    stamp = directory / f"..{version}"
    stamp.mkdir()
    (stamp / "palfrey.toml").write_text(text)
    (directory / "..tmp").symlink_to(stamp.name)
    os.replace(directory / "..tmp", directory / "..data")
    link = directory / "palfrey.toml"
    if not link.is_symlink():
        link.symlink_to(Path("..data") / "palfrey.toml")


def test_file_watch_sees_a_configmap_symlink_swap(tmp_path: Path) -> None:
    _publish(tmp_path, "1", "a = 1\n")
    watch = FileWatch([tmp_path / "palfrey.toml"])
    assert not watch.changed()
    _publish(tmp_path, "2", "a = 1\n")  # same bytes, new directory: still a new version
    assert watch.changed()
    assert not watch.changed()


def test_file_watch_waits_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "palfrey.toml"
    path.write_text("a = 1\n")
    watch = FileWatch([path])
    path.unlink()
    assert not watch.changed()  # mid-save: not a change yet
    path.write_text("a = 2\n")
    assert watch.changed()


def test_reload_filter_defaults_and_patterns(tmp_path: Path) -> None:
    accept = PathFilter(ReloadPlan(dirs=(), includes=(), excludes=(), delay=0.25), [tmp_path])
    assert accept(tmp_path / "app.py")
    assert not accept(tmp_path / "notes.txt")
    assert not accept(tmp_path / ".hidden.py")
    assert not accept(tmp_path / "__pycache__" / "app.py")
    reload = make_plan(
        ["app:app", "--reload"], reload={"includes": ["*.html"], "excludes": ["legacy/*"]}
    )
    assert reload.process.reload is not None
    custom = PathFilter(reload.process.reload, [tmp_path])
    assert custom(tmp_path / "page.html")
    assert custom(tmp_path / "app.py")  # *.py is always included, as in uvicorn
    assert not custom(tmp_path / "legacy" / "old.py")


def test_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sd_notify.ready() is False  # no NOTIFY_SOCKET: a no-op
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify.ready("2 workers")
        assert receiver.recv(1024).startswith(b"READY=1\nSTATUS=2 workers\nMAINPID=")
        assert sd_notify.stopping()
        assert receiver.recv(1024) == b"STOPPING=1"
        assert sd_notify.reloading()
        assert receiver.recv(1024).startswith(b"RELOADING=1\nMONOTONIC_USEC=")


class _Transport:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /healthz HTTP/1.1", b"200"),
        (b"GET /readyz?verbose HTTP/1.1", b"503"),
        (b"GET /nope HTTP/1.1", b"404"),
        (b"POST /healthz HTTP/1.1", b"405"),
    ],
)
def test_health_protocol(request_line: bytes, status: bytes) -> None:
    protocol = HealthProtocol({"/healthz": lambda: True, "/readyz": lambda: False})
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(request_line + b"\r\nHost: x\r\n")
    assert transport.data == b""  # waits for the end of the head (split feed)
    protocol.data_received(b"\r\n")
    assert transport.data.startswith(b"HTTP/1.1 " + status)
    assert transport.closed


def test_restart_needed_and_exit_descriptions() -> None:
    old = load_config(["app:app"])
    assert restart_needed(old, load_config(["app:app", "--port", "9000"])) == []
    new = load_config(["app:app", "--health-listener", "127.0.0.1:9001"])
    assert restart_needed(old, new) == ["health.listener"]
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(3) == "exit code 3"


def test_listener_set_reuses_sockets_for_the_same_spec() -> None:
    config = load_config(["app:app", "--port", "0"])
    first, fresh = ListenerSet.open(config)
    try:
        assert fresh == first.sockets
        again, fresh_again = ListenerSet.open(config, reuse=reusable(first))
        assert fresh_again == []
        assert again.sockets == first.sockets
        env = handoff_env(first)
        adopted = adopt_handoff(dict(env))
        assert len(adopted) == 1
        (sock,) = adopted.values()
        assert sock.getsockname() == first.sockets[0].getsockname()
        sock.detach()
    finally:
        first.close_except()


def test_tls_reload_in_place(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = ca.issue_cert("first.example")
    first.cert_chain_pems[0].write_to_path(str(cert))
    first.private_key_pem.write_to_path(str(key))
    config = load_config(["app:app", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)])
    from palfrey.plan.tls import create_ssl_context, reload_in_place

    assert config.tls is not None
    context = create_ssl_context(config.tls)
    second = ca.issue_cert("second.example")
    second.cert_chain_pems[0].write_to_path(str(cert))
    second.private_key_pem.write_to_path(str(key))
    reload_in_place(context, config.tls)

    client = ssl.create_default_context()
    ca.configure_trust(client)
    assert asyncio.run(_handshake_name(context, client)) == "second.example"


async def _handshake_name(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="second.example"
    )
    peer = writer.get_extra_info("peercert")
    writer.close()
    server.close()
    names = [value for kind, value in peer["subjectAltName"] if kind == "DNS"]
    return str(names[0])
