"""HTTP/2 black-box tests over loopback: curl, httpx and the h2 library as clients of a
Palfrey serving HTTP/1.1 and HTTP/2 on one listener."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.errors
import h2.events
import h2.settings
import httpx
import pytest
import trustme

from tests.helpers.h2peer import H2Peer
from tests.helpers.server import RunningServer, run_server
from tests.integration import http2_app
from tests.integration.http2_app import app

H2 = {"enabled": True}
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server(app, http2=H2) as running:
        yield running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("pki")
    certfile, cafile = folder / "cert.pem", folder / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(certfile)
    ca.cert_pem.write_to_path(cafile)
    return ca, certfile, cafile


@pytest.fixture(scope="module")
def tls_server(pki: tuple[trustme.CA, Path, Path]) -> Iterator[RunningServer]:
    _, certfile, _ = pki
    with run_server(app, http2=H2, tls={"certfile": str(certfile)}) as running:
        yield running


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=15
    )


# -- version selection on one listener -----------------------------------------------


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_prior_knowledge(server: RunningServer) -> None:
    done = _curl("--http2-prior-knowledge", "-w", " %{http_version}", server.url + "/pk")
    assert done.stdout == "2 GET /pk 2", done.stderr


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_h2c_upgrade_with_body(server: RunningServer) -> None:
    body = "x" * 5000
    done = _curl("--http2", "-d", body, "-w", " %{http_version}", server.url + "/echo")
    digest = hashlib.sha256(body.encode()).hexdigest()
    assert done.stdout == f"5000 {digest} 2", done.stderr


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_over_tls_with_alpn(tls_server: RunningServer) -> None:
    url = tls_server.url.replace("http://", "https://") + "/tls"
    done = _curl("--http2", "-k", "-w", " %{http_version}", url)
    assert done.stdout == "2 GET /tls 2", done.stderr
    done = _curl("--http1.1", "-k", "-w", " %{http_version}", url)
    assert done.stdout == "1.1 GET /tls 1.1", done.stderr


def test_http11_client_on_the_same_port(server: RunningServer) -> None:
    response = httpx.get(server.url + "/plain")
    assert response.http_version == "HTTP/1.1"
    assert response.text == "1.1 GET /plain"


def test_httpx_http2_over_tls(
    tls_server: RunningServer, pki: tuple[trustme.CA, Path, Path]
) -> None:
    ca, _, _ = pki
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = tls_server.url.replace("http://", "https://").replace("127.0.0.1", "localhost")
    with httpx.Client(http2=True, verify=context) as client:
        responses = [client.get(f"{url}/n/{i}") for i in range(3)]
        posted = client.post(url + "/echo", content=b"a" * 100_000)
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert [r.text for r in responses] == [f"2 GET /n/{i}" for i in range(3)]
    assert posted.text.startswith("100000 ")


def test_h2c_upgrade_with_h2_client(server: RunningServer) -> None:
    # RFC 7540 §3.2, the way the h2 library's client does it.
    sock = socket.create_connection(server.address, timeout=5)
    peer = H2Peer(server.address, connect=False)
    peer.sock.close()
    peer.sock = sock
    settings = peer.conn.initiate_upgrade_connection()
    assert settings is not None
    sock.sendall(
        b"GET /upgraded HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    peer.flush()  # the client preface
    peer.responses[1] = http2_response = type(peer.responses.get(1, None) or _response())()
    response = peer.wait(1)
    assert response is http2_response
    assert (response.status, bytes(response.body)) == (200, b"2 GET /upgraded")
    peer.close()


def _response() -> Any:
    from tests.helpers.h2peer import Response

    return Response()


# -- streams, flow control, resets -----------------------------------------------------


def test_100_concurrent_streams_each_get_their_own_response(server: RunningServer) -> None:
    peer = H2Peer(server.address)
    sids = [peer.request(f"/s/{i}", end=False) for i in range(100)]
    for sid in sids:
        peer.conn.end_stream(sid)
    peer.flush()
    responses = peer.wait_all(sids)
    assert [bytes(r.body) for r in responses] == [f"2 GET /s/{i}".encode() for i in range(100)]
    peer.close()


def test_large_upload_and_download_with_small_windows() -> None:
    with run_server(app, http2={"enabled": True, "initial_window_size": 4096}) as running:
        codes = h2.settings.SettingCodes
        peer = H2Peer(running.address, settings={codes.INITIAL_WINDOW_SIZE: 8192})
        body = bytes(range(256)) * (5 * 4096)  # 5 MiB
        sid = peer.request("/echo", method="POST", body=body)
        response = peer.wait(sid, timeout=30)
        assert bytes(response.body) == b"%d %s" % (
            len(body),
            hashlib.sha256(body).hexdigest().encode(),
        )
        size = 2 * 1024 * 1024
        sid = peer.request(f"/download?{size}")
        response = peer.wait(sid, timeout=30)
        expected = (bytes(range(256)) * 256) * (size // 65536)
        assert len(response.body) == size
        assert bytes(response.body) == expected
        peer.close()


def test_rst_stream_mid_response_disconnects_the_app(server: RunningServer) -> None:
    http2_app.EVENTS.clear()
    peer = H2Peer(server.address)
    sid = peer.request("/endless")
    peer.wait_for(h2.events.DataReceived)
    peer.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    peer.flush()
    deadline = time.monotonic() + 5
    while "http.disconnect" not in http2_app.EVENTS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http2_app.EVENTS == ["send-failed", "http.disconnect"]
    # The connection is still usable.
    assert bytes(peer.wait(peer.request("/after")).body) == b"2 GET /after"
    peer.close()


async def _streaming_until_gone(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # Lets the ClientDisconnected from `send` propagate, as most apps do.
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        raise RuntimeError("a real bug")
    _STARTED.append(scope["path"])
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"x" * 512, "more_body": True})
            await asyncio.sleep(0.01)
    finally:
        _FINISHED.append(scope["path"])


_STARTED: list[str] = []
_FINISHED: list[str] = []


def test_client_leaving_mid_streams_is_not_an_app_error(
    pki: tuple[trustme.CA, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a client closing a TLS HTTP/2 connection with streams in flight (h2load
    # at the end of a run) made each stream log an ERROR traceback. With stderr a pipe
    # nobody drained, 64 KiB of them blocked the server's event loop in write(), and it
    # stopped accepting connections.
    ca, certfile, _ = pki
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    _STARTED.clear()
    _FINISHED.clear()
    tls = {"certfile": str(certfile)}
    with (
        caplog.at_level(logging.DEBUG, logger="palfrey.error"),
        run_server(_streaming_until_gone, http2=H2, tls=tls) as running,
    ):
        peer = H2Peer(running.address, tls=context)
        for i in range(10):
            peer.request(f"/s/{i}")
        deadline = time.monotonic() + 5
        while len(_STARTED) < 10 and time.monotonic() < deadline:
            peer.receive(0.2)
        peer.close()  # mid-response, no RST_STREAM or GOAWAY
        while len(_FINISHED) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_FINISHED) == 10
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
        # A genuine app error is still reported.
        peer = H2Peer(running.address, tls=context)
        assert peer.wait(peer.request("/boom")).status == 500
        peer.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "Exception in ASGI application"
    ]


# -- ASGI extensions -----------------------------------------------------------------


def test_trailers(server: RunningServer) -> None:
    peer = H2Peer(server.address)
    response = peer.wait(peer.request("/trailers", headers=[("te", "trailers")]))
    assert bytes(response.body) == b"part1 part2"
    assert response.trailers == [(b"x-checksum", b"abc123")]
    peer.close()


def test_early_hints(server: RunningServer) -> None:
    peer = H2Peer(server.address)
    response = peer.wait(peer.request("/hint"))
    hint = [(b":status", b"103"), (b"link", b"</style.css>; rel=preload")]
    assert response.informational == [hint]
    assert (response.status, bytes(response.body)) == (200, b"hinted")
    peer.close()


def test_pathsend(server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    http2_app.FILE_PATH[:] = [str(path)]
    peer = H2Peer(server.address)
    response = peer.wait(peer.request("/file"))
    assert bytes(response.body) == data
    assert response.header(b"content-length") == str(len(data)).encode()
    peer.close()


# -- shutdown and protection ---------------------------------------------------------


def test_goaway_on_shutdown_lets_in_flight_streams_finish() -> None:
    with run_server(app, http2=H2) as running:
        peer = H2Peer(running.address)
        sid = peer.request("/sleep?0.5")
        time.sleep(0.1)
        threading.Thread(target=running.stop).start()
        goaway = peer.wait_for(h2.events.ConnectionTerminated)
        assert goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert goaway.last_stream_id == sid
        response = peer.wait(sid)
        assert bytes(response.body) == b"slept"
        peer.close()


def test_rapid_reset_is_answered_with_enhance_your_calm() -> None:
    with run_server(app, http2={"enabled": True, "max_client_resets": 50}) as running:
        peer = H2Peer(running.address)
        for _ in range(200):
            sid = peer.request("/sleep?1")
            peer.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            try:
                peer.flush()
            except OSError:
                break
        goaway = peer.wait_for(h2.events.ConnectionTerminated)
        assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        peer.close()


# -- WebSocket over HTTP/2 (RFC 8441) --------------------------------------------------


def test_websocket_over_http2_echo(server: RunningServer) -> None:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection, TextMessage

    peer = H2Peer(server.address)
    settings = peer.wait_for(h2.events.RemoteSettingsChanged)
    assert (
        settings.changed_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL].new_value == 1
    )
    sid = peer.conn.get_next_available_stream_id()
    peer.responses[sid] = _response()
    fields = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", "/ws"),
        (":authority", "localhost"),
        ("sec-websocket-version", "13"),
    ]
    peer.conn.send_headers(sid, fields)
    peer.flush()
    accepted = peer.wait_for(h2.events.ResponseReceived)
    assert dict(accepted.headers)[b":status"] == b"200"
    ws = Connection(ConnectionType.CLIENT)
    peer.conn.send_data(sid, ws.send(TextMessage("hello")) + ws.send(BytesMessage(b"\x00\x01")))
    peer.flush()
    received: list[Any] = []
    deadline = time.monotonic() + 5
    while len(received) < 2 and time.monotonic() < deadline:
        event = peer.wait_for(h2.events.DataReceived)
        ws.receive_data(event.data)
        received.extend(e for e in ws.events() if isinstance(e, (TextMessage, BytesMessage)))
    assert [e.data for e in received] == ["echo:hello", b"\x00\x01"]
    peer.conn.send_data(sid, ws.send(CloseConnection(1000)), end_stream=True)
    peer.flush()
    response = peer.wait(sid)
    assert response.ended
    peer.close()


# -- connection preface (RFC 9113 §3.4) -------------------------------------------------


def _read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY among the frames in `data`."""
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == 0x7:
            return int.from_bytes(data[13:17], "big")
        data = data[9 + length :]
    return None


def test_invalid_preface_after_alpn_h2_is_a_protocol_error(
    tls_server: RunningServer, pki: tuple[trustme.CA, Path, Path]
) -> None:
    ca, _, _ = pki
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(tls_server.address, timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = _read_all(sock)
    assert not data.startswith(b"HTTP/1.1")
    assert _goaway_code(data) == h2.errors.ErrorCodes.PROTOCOL_ERROR


def test_cleartext_first_line_neither_http1_nor_preface(server: RunningServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"INVALID CONNECTION PREFACE\r\n\r\n")
        data = _read_all(sock)
    assert _goaway_code(data) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    # An HTTP/1.x request line, even a malformed one, is still HTTP/1.1's to answer.
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"GET  /double-space HTTP/1.1\r\nHost: a\r\n\r\n")
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("together", [True, False], ids=["one-write", "two-writes"])
def test_client_goaway_lets_streams_in_flight_finish(server: RunningServer, together: bool) -> None:
    peer = H2Peer(server.address)
    fields = [(":method", "GET"), (":scheme", "http"), (":path", "/sleep?0.3")]
    peer.conn.send_headers(1, [*fields, (":authority", "localhost")], end_stream=True)
    if not together:
        peer.flush()
        time.sleep(0.1)
    peer.conn.close_connection()  # GOAWAY NO_ERROR from the client
    peer.flush()  # with `together`, HEADERS and GOAWAY reach the server in one read
    # h2's client closes its state machine after its own GOAWAY: read the raw bytes.
    data = _read_all(peer.sock)
    assert b"slept" in data  # stream 1's response, then our GOAWAY and the close
    assert _goaway_code(data) == h2.errors.ErrorCodes.NO_ERROR
    peer.close()
