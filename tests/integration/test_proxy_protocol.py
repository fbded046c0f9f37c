"""PROXY protocol v1 and v2 over loopback: raw headers in front of HTTP/1.1, h2c, TLS with
ALPN h2 and a WebSocket upgrade; refusals that never reach the app; and a real haproxy in
TCP mode with send-proxy and send-proxy-v2 in front of Palfrey."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.sync.client import connect as ws_connect

from tests.helpers import proxyproto
from tests.helpers.h2peer import H2Peer
from tests.helpers.process import BIN, PalfreyProcess
from tests.helpers.server import RunningServer, run_server

TIMEOUT = 5.0
CALLS: list[str] = []


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with what it was told about the connection."""
    seen = {
        "client": scope["client"],
        "server": scope["server"],
        "scheme": scope["scheme"],
        "http_version": scope.get("http_version"),
        "proxy": scope["extensions"].get("palfrey.proxy_protocol"),
    }
    if scope["type"] == "lifespan":
        return
    CALLS.append(scope["type"])
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close"})
        return
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def serve(mode: str, backend: str = "h11", **sections: Any) -> Any:
    proxy = {"protocol": mode, **sections.pop("proxy", {})}
    return run_server(app, backend=backend, proxy=proxy, **sections)


def exchange(address: tuple[str, int], data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send `data` and read until the server closes or the response body ends."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if received.endswith(b"}"):
                    break
    return received


def body(response: bytes) -> dict[str, Any]:
    head, _, text = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    result: dict[str, Any] = json.loads(text)
    return result


REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
V1 = proxyproto.v1("203.0.113.7", "192.0.2.1", 56324, 443)
V2 = proxyproto.v2(
    "2001:db8::7", "2001:db8::1", 40000, 8443, tlvs=proxyproto.tlv(2, b"api.example")
)


@pytest.fixture(autouse=True)
def _forget_calls() -> None:
    CALLS.clear()


@pytest.mark.parametrize("backend", ["h11", "httptools"])
def test_v1_and_v2_set_the_client_on_http11(backend: str) -> None:
    with serve("auto", backend) as running:
        seen = body(exchange(running.address, V1 + REQUEST))
        assert (seen["client"], seen["server"]) == (["203.0.113.7", 56324], ["192.0.2.1", 443])
        assert seen["proxy"]["version"] == 1
        seen = body(exchange(running.address, V2 + REQUEST))
        assert seen["client"] == ["2001:db8::7", 40000]
        assert seen["proxy"]["authority"] == "api.example"
        # "auto" without a header: the connection's own addresses.
        plain = body(exchange(running.address, REQUEST))
        assert plain["client"][0] == "127.0.0.1"
        assert plain["proxy"] is None


def test_local_and_unknown_keep_the_peer_address() -> None:
    with serve("auto") as running:
        for header in (proxyproto.v2(command=0), b"PROXY UNKNOWN\r\n", proxyproto.v2()):
            seen = body(exchange(running.address, header + REQUEST))
            assert seen["client"][0] == "127.0.0.1"
            assert seen["proxy"] is not None


def test_header_split_across_reads_and_keep_alive() -> None:
    with serve("v2", "httptools") as running, socket.create_connection(running.address) as sock:
        sock.settimeout(TIMEOUT)
        for piece in (V2[:5], V2[5:17], V2[17:] + REQUEST[:10]):
            sock.sendall(piece)
            time.sleep(0.05)
        sock.sendall(REQUEST[10:])
        first = sock.recv(65536)
        sock.sendall(REQUEST)  # the header is read once: later requests just follow
        second = sock.recv(65536)
        assert body(first)["client"] == body(second)["client"] == ["2001:db8::7", 40000]


def test_h2c_prior_knowledge_after_the_header() -> None:
    with serve("v1", http2={"enabled": True}) as running:
        peer = H2Peer(running.address, before=V1)
        response = peer.wait(peer.request("/"))
        peer.close()
        assert response.status == 200
        seen = json.loads(bytes(response.body))
        assert (seen["client"], seen["http_version"]) == (["203.0.113.7", 56324], "2")
        assert seen["proxy"]["version"] == 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("proxy-tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return ca, certfile, keyfile


def client_context(ca: trustme.CA, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(alpn)
    return context


def test_tls_with_alpn_h2_after_the_header(pki: tuple[trustme.CA, Path, Path]) -> None:
    ca, certfile, keyfile = pki
    tls = {"certfile": str(certfile), "keyfile": str(keyfile)}
    with serve("auto", "httptools", tls=tls, http2={"enabled": True}) as running:
        peer = H2Peer(running.address, tls=client_context(ca, ["h2"]), before=V2)
        response = peer.wait(peer.request("/"))
        peer.close()
        seen = json.loads(bytes(response.body))
        assert (seen["client"], seen["http_version"]) == (["2001:db8::7", 40000], "2")
        assert seen["proxy"]["authority"] == "api.example"
        # HTTP/1.1 over TLS on the same listener, ALPN http/1.1.
        with socket.create_connection(running.address, timeout=TIMEOUT) as raw:
            raw.sendall(V1)
            context = client_context(ca, ["http/1.1"])
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(REQUEST)
                seen = body(sock.recv(65536))
        assert (seen["client"], seen["scheme"]) == (["203.0.113.7", 56324], "https")
        assert seen["proxy"]["transport"] == "TCP4"


def test_websocket_upgrade_after_the_header() -> None:
    with serve("v1", websocket={"backend": "wsproto"}) as running:
        sock = socket.create_connection(running.address, timeout=TIMEOUT)
        sock.sendall(V1)
        with ws_connect("ws://localhost/", sock=sock, open_timeout=TIMEOUT) as ws:
            seen = json.loads(ws.recv(timeout=TIMEOUT))
        assert seen["client"] == ["203.0.113.7", 56324]
        assert seen["proxy"]["version"] == 1


def test_forwarding_headers_apply_on_top_only_from_a_trusted_proxied_peer() -> None:
    trusted = {"forwarded_allow_ips": ["127.0.0.1", "10.0.0.0/8"]}
    with serve("v1", proxy=trusted) as running:
        forwarded = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.9\r\n\r\n"
        inner = proxyproto.v1("10.1.2.3", "10.0.0.1", 5000, 80)
        assert body(exchange(running.address, inner + forwarded))["client"][0] == "198.51.100.9"
        outer = proxyproto.v1("203.0.113.7", "10.0.0.1", 5000, 80)
        assert body(exchange(running.address, outer + forwarded))["client"] == ["203.0.113.7", 5000]


REFUSED = [
    ("v1", b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n" + REQUEST),  # malformed
    ("v1", b"PROXY TCP4 203.0.113.7 192.0.2.1 056324 443\r\n" + REQUEST),
    ("v2", V2[:20]),  # truncated, then the client closes
    ("v2", proxyproto.SIGNATURE + b"\x21\x11\xff\xff" + bytes(200)),  # oversized length
    ("v2", REQUEST),  # required, missing
    ("v1", V2 + REQUEST),  # the other version
    ("v1", b"PROXY " + b"x" * 200 + b"\r\n" + REQUEST),  # no CRLF within 107 bytes
    ("auto", proxyproto.with_crc(proxyproto.v2("1.2.3.4", "5.6.7.8", 1, 2))[:-1] + b"\0" + REQUEST),
]


@pytest.mark.parametrize(("mode", "data"), REFUSED)
def test_refused_connections_never_reach_the_app(mode: str, data: bytes) -> None:
    with serve(mode) as running:
        with socket.create_connection(running.address, timeout=TIMEOUT) as sock:
            sock.sendall(data)
            if data == V2[:20]:
                sock.shutdown(socket.SHUT_WR)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    received += chunk
        assert received == b""  # closed without a response
        assert CALLS == []
        # Still serving.
        good = V2 if mode == "v2" else V1
        assert body(exchange(running.address, good + REQUEST))["client"][0] != "127.0.0.1"


def test_a_header_from_an_untrusted_peer_is_refused() -> None:
    untrusted = {"forwarded_allow_ips": ["10.0.0.0/8"]}
    for mode in ("v1", "auto"):
        with serve(mode, proxy=untrusted) as running:
            assert exchange(running.address, V1 + REQUEST) == b""
            assert CALLS == []
            if mode == "auto":  # no header from an untrusted peer: served as it is
                assert body(exchange(running.address, REQUEST))["client"][0] == "127.0.0.1"


def test_a_header_that_never_completes_is_bounded_by_the_head_read_timeout() -> None:
    with serve("v1", timeouts={"header_read": 0.5}) as running:
        with socket.create_connection(running.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 203.0.113.7 ")
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
            assert time.monotonic() - started < 3.0
        # A prefix too short to tell ("P" could be POST) also times out.
        with socket.create_connection(running.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"P")
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
        assert CALLS == []


def test_bind_option_overrides_the_section(tmp_path: Path) -> None:
    binds = [f"127.0.0.1:{_free_port()}?proxy=v2", f"127.0.0.1:{_free_port()}"]
    with run_server(app, proxy={"protocol": "v1"}, server={"bind": binds}) as running:
        listeners = running.server.plan.listeners
        assert [lis.proxy_protocol.mode for lis in listeners if lis.proxy_protocol] == ["v2", "v1"]
        first = tuple(running.server.addresses[0][:2])
        assert body(exchange(first, V2 + REQUEST))["client"] == ["2001:db8::7", 40000]
        second = tuple(running.server.addresses[1][:2])
        assert body(exchange(second, V1 + REQUEST))["client"] == ["203.0.113.7", 56324]


# -- a real haproxy in front -------------------------------------------------------------

HAPROXY = shutil.which("haproxy")
HAPROXY_CONFIG = """
global
    log stderr format raw local0 warning
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{front}
    default_backend palfrey
backend palfrey
    server one 127.0.0.1:{back} {send}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def haproxy(tmp_path: Path, back: int, send: str) -> Iterator[int]:
    front = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(front=front, back=back, send=send))
    assert HAPROXY is not None
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("haproxy did not start") from None
                time.sleep(0.05)
        yield front
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
@pytest.mark.parametrize("backend", ["h11", "httptools"])
def test_haproxy_in_tcp_mode_passes_the_real_client(
    tmp_path: Path, send: str, backend: str
) -> None:
    mode = "v1" if send == "send-proxy" else "v2"
    with serve(mode, backend) as running, haproxy(tmp_path, running.address[1], send) as front:
        with socket.create_connection(("127.0.0.1", front), timeout=TIMEOUT) as sock:
            mine = sock.getsockname()
            sock.sendall(REQUEST)
            received = b""
            while not received.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
        seen = body(received)
    # Through haproxy, the app sees this test's own socket: address and ephemeral port.
    assert seen["client"] == [mine[0], mine[1]]
    assert seen["server"] == ["127.0.0.1", front]
    assert seen["proxy"]["version"] == (1 if send == "send-proxy" else 2)


# -- as a user runs it -------------------------------------------------------------------

PROBE = """
import json
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_check_config_and_workers_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    check = subprocess.run(
        [str(BIN / "palfrey"), "probe:app", "--check-config",
         "--proxy-protocol", "v2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "(PROXY protocol v2)" in check.stdout
    args = ["probe:app", "--port", "0", "--proxy-protocol", "v1", "--workers", "2"]
    with PalfreyProcess(args, cwd=tmp_path) as proc:
        address = ("127.0.0.1", proc.wait_for_port())
        deadline = time.monotonic() + 15
        answered = 0
        while answered < 4:  # until the workers serve, then a few more
            received = b""
            with contextlib.suppress(OSError):
                received = exchange(address, V1 + REQUEST)
            if received:
                assert json.loads(received.partition(b"\r\n\r\n")[2])["client"] == [
                    "203.0.113.7",
                    56324,
                ]
                answered += 1
            else:
                assert time.monotonic() < deadline, proc.log
                time.sleep(0.1)


def test_a_bad_listener_option_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "palfrey"), "probe:app", "--server-bind",
         "127.0.0.1:0?proxy=v3", "--health-listener", "127.0.0.1:0?proxy=v1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "proxy= takes one of off, v1, v2, auto" in result.stderr
    assert "this listener takes no options" in result.stderr


def test_running_server_reports_proxy_listeners(tmp_path: Path) -> None:
    with serve("auto") as running:
        assert isinstance(running, RunningServer)
        (listener,) = running.server.plan.listeners
        assert "PROXY protocol v1 or v2, optional" in str(listener)
