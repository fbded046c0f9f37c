"""Listeners and TLS end to end: asyncio servers on sockets from palfrey.plan.listeners,
real TLS handshakes with contexts from palfrey.plan.tls (trustme CA; httpx and ssl
clients), UNIX sockets, inherited fds and systemd LISTEN_FDS in child processes."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography import x509

from palfrey.plan.listeners import ListenerSpec
from palfrey.plan.realize import bind, close_listeners, describe
from palfrey.plan.tls import create_ssl_context
from palfrey.transports.tls_scope import tls_scope_extension
from tests.unit.test_tls import _section, ca, pki

__all__ = ["ca", "pki"]  # module-scoped fixtures shared with the unit tests

TIMEOUT = 10


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop, bounded by a timeout."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), TIMEOUT * 2))

    return wrapper


async def _serve(context: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    """A tiny HTTP/1.1 server that answers every request with the tls extension as JSON."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            extension = tls_scope_extension(writer.get_extra_info("ssl_object"))
            body = json.dumps(extension).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


def _client_context(ca: trustme.CA, cert: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        context.load_cert_chain(cert)
    return context


def _der(pem: str | bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem if isinstance(pem, str) else pem.decode())


@run
async def test_httpx_over_tls_without_client_cert(ca: trustme.CA, pki: dict[str, Path]) -> None:
    server, port = await _serve(create_ssl_context(_section(pki)))
    async with server, httpx.AsyncClient(verify=_client_context(ca), timeout=TIMEOUT) as client:
        response = await client.get(f"https://localhost:{port}/")
    data = response.json()
    assert data["client_cert_chain"] == []
    assert data["client_cert_name"] is None
    assert data["client_cert_error"] is None
    assert data["tls_version"] == 0x0304
    assert data["cipher_suite"] in {0x1301, 0x1302, 0x1303}
    assert _der(data["server_cert"]) == _der(pki["cert"].read_bytes())


@run
async def test_tls12_reports_its_version_and_cipher(ca: trustme.CA, pki: dict[str, Path]) -> None:
    server, port = await _serve(create_ssl_context(_section(pki)))
    client_context = _client_context(ca)
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    client_context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    async with server, httpx.AsyncClient(verify=client_context, timeout=TIMEOUT) as client:
        data = (await client.get(f"https://127.0.0.1:{port}/")).json()
    assert data["tls_version"] == 0x0303
    assert data["cipher_suite"] == 0xC02B  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256


@run
async def test_below_minimum_version_is_refused(ca: trustme.CA, pki: dict[str, Path]) -> None:
    server, port = await _serve(create_ssl_context(_section(pki, minimum_version="1.3")))
    client_context = _client_context(ca)
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=client_context), TIMEOUT
            )


@run
async def test_client_cert_required(ca: trustme.CA, pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki, ca_certs=pki["ca"], cert_reqs="required"))
    server, port = await _serve(context)
    async with server:
        with_cert = _client_context(ca, pki["client"])
        async with httpx.AsyncClient(verify=with_cert, timeout=TIMEOUT) as client:
            data = (await client.get(f"https://localhost:{port}/")).json()
        # Without a certificate the handshake (or, in TLS 1.3, the first read) fails.
        async with httpx.AsyncClient(verify=_client_context(ca), timeout=TIMEOUT) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"https://localhost:{port}/")
    leaf = x509.load_pem_x509_certificate(pki["client_leaf"].read_bytes())
    assert data["client_cert_name"] == leaf.subject.rfc4514_string()
    assert data["client_cert_name"].startswith("CN=client\\, one,OU=")
    assert _der(data["client_cert_chain"][0]) == _der(pki["client_leaf"].read_bytes())
    if sys.version_info >= (3, 13):
        assert len(data["client_cert_chain"]) == 2  # leaf and the intermediate CA
    assert data["client_cert_error"] is None


@run
async def test_client_cert_optional(ca: trustme.CA, pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki, ca_certs=pki["ca"], cert_reqs="optional"))
    server, port = await _serve(context)
    async with server:
        async with httpx.AsyncClient(verify=_client_context(ca), timeout=TIMEOUT) as client:
            anonymous = (await client.get(f"https://localhost:{port}/")).json()
        with_cert = _client_context(ca, pki["client"])
        async with httpx.AsyncClient(verify=with_cert, timeout=TIMEOUT) as client:
            known = (await client.get(f"https://localhost:{port}/")).json()
    assert anonymous["client_cert_chain"] == []
    assert known["client_cert_name"].startswith("CN=client")


@run
async def test_alpn_is_negotiated(ca: trustme.CA, pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki), alpn_protocols=("h2", "http/1.1"))
    server, port = await _serve(context)
    client_context = _client_context(ca)
    client_context.set_alpn_protocols(["h2"])
    async with server:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("localhost", port, ssl=client_context), TIMEOUT
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        writer.close()


# ------------------------------------------------- asyncio servers on bound listeners


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="pf") as name:
        yield Path(name)


async def _serve_on(sock: socket.socket, context: ssl.SSLContext | None) -> asyncio.Server:
    """What the server does with a listener: loop.create_server(sock=...)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            ssl_object = writer.get_extra_info("ssl_object")
            body = json.dumps({"tls": ssl_object is not None}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, sock=sock, ssl=context)


def _run_on(loop_kind: str, coroutine: Coroutine[Any, Any, None]) -> None:
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(coroutine, TIMEOUT * 2))
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_unix_socket_with_mode_served_to_httpx(short_tmp: Path, loop_kind: str) -> None:
    _run_on(loop_kind, _unix_socket_roundtrip(short_tmp))


async def _unix_socket_roundtrip(short_tmp: Path) -> None:
    path = short_tmp / "app.sock"
    sock = bind(ListenerSpec(kind="unix", path=str(path), mode=0o660), 16)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert describe(sock) == f"unix:{path}"
    try:
        server = await _serve_on(sock, None)
        async with server:
            transport = httpx.AsyncHTTPTransport(uds=str(path))
            async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
                response = await client.get("http://localhost/")
        assert response.json() == {"tls": False}
    finally:
        close_listeners([sock])
    assert not path.exists()


@run
async def test_tls_on_a_bound_tcp_listener(ca: trustme.CA, pki: dict[str, Path]) -> None:
    sock = bind(ListenerSpec(kind="tcp", host="127.0.0.1", port=0), 16)
    url = describe(sock, tls=True)
    assert url.startswith("https://127.0.0.1:")
    try:
        server = await _serve_on(sock, create_ssl_context(_section(pki)))
        client = httpx.AsyncClient(verify=_client_context(ca), timeout=TIMEOUT)
        async with server, client:
            response = await client.get(url + "/")
        assert response.json() == {"tls": True}
    finally:
        close_listeners([sock])


# -------------------------------------------------------------- processes and fds


def test_systemd_listen_fds_with_a_real_fd(tmp_path: Path) -> None:
    """A child process gets a listening socket as fd 3 with LISTEN_FDS/LISTEN_PID, as
    systemd passes it, and serves a connection on it."""
    parent = socket.create_server(("127.0.0.1", 0))
    port = parent.getsockname()[1]
    script = textwrap.dedent(
        """
        import os, socket, sys
        os.environ["LISTEN_PID"] = str(os.getpid())  # systemd sets it to the child's pid
        from palfrey.config.model import Config
        from palfrey.plan.plan import plan
        from palfrey.plan.realize import bind_all, describe
        [listener] = plan(Config(), os.environ).listeners
        [sock] = bind_all([listener.spec], 16)
        print(describe(sock), sock.fileno(), flush=True)
        sock.setblocking(True)
        sock.settimeout(10)
        conn, _ = sock.accept()
        conn.sendall(b"hello from fd 3")
        conn.close()
        """
    )
    env = {**os.environ, "LISTEN_FDS": "1"}
    env.pop("PALFREY_SERVER__PORT", None)
    fd = parent.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        pass_fds=(fd, 3),
        stdout=subprocess.PIPE,
        # Put the socket at fd 3 in the child, as systemd does.
        preexec_fn=lambda: (os.dup2(fd, 3), None)[1],
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.split() == [f"http://127.0.0.1:{port}", "3"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert client.recv(100) == b"hello from fd 3"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
        parent.close()


def test_inherited_by_a_child_process() -> None:
    """TCP listeners are inheritable: a spawned worker can serve on the same socket."""
    sock = bind(ListenerSpec(kind="tcp", host="127.0.0.1", port=0), 16)
    port = sock.getsockname()[1]
    script = (
        "import socket, sys; s = socket.socket(fileno=int(sys.argv[1])); s.setblocking(True);"
        "s.settimeout(10); c, _ = s.accept(); c.sendall(b'worker'); c.close()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(sock.fileno())], pass_fds=(sock.fileno(),)
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert client.recv(100) == b"worker"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
        close_listeners([sock])
