"""The HTTP/1.1 contract, black-box over loopback, identical on both parser backends."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from tests.helpers.server import run_server

BACKENDS = ("h11", "httptools")
TIMEOUT = 5.0


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Any, body: bytes, status: int = 200, headers: Any = None) -> None:
    headers = headers or [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Echoes method, path and body; /stream streams; /sha returns the body's digest."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/sha":
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await _respond(send, f"{size} {digest.hexdigest()}".encode())
    elif path == "/download":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(32):
            await send({"type": "http.response.body", "body": b"d" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        body = await _read_body(receive)
        text = f"{scope['method']} {scope['path']} {scope['http_version']} ".encode() + body
        await _respond(send, text)


def raw_exchange(address: tuple[str, int], data: bytes, *, wait: float = 0.5) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet for `wait` seconds."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_keep_alive_reuses_one_connection(backend: str) -> None:
    with (
        run_server(echo_app, backend=backend) as running,
        httpx.Client(base_url=running.url, timeout=TIMEOUT) as client,
    ):
        ports = set()
        for i in range(3):
            response = client.post(f"/k{i}", content=b"x")
            assert response.text == f"POST /k{i} 1.1 x"
            stream = response.extensions["network_stream"]
            ports.add(stream.get_extra_info("socket").getsockname()[1])
        assert len(ports) == 1


def test_pipelined_responses_in_order(backend: str) -> None:
    requests = b"".join(
        f"POST /p{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{i}".encode() for i in range(5)
    )
    with run_server(echo_app, backend=backend) as running:
        raw = raw_exchange(
            running.address, requests + b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    bodies = [
        part.split(b"\r\n\r\n", 1)[1][: len(b"POST /p0 1.1 0")]
        for part in raw.split(b"HTTP/1.1 200 OK")[1:]
    ]
    assert bodies[:5] == [f"POST /p{i} 1.1 {i}".encode() for i in range(5)]
    assert raw.count(b"HTTP/1.1 200 OK") == 6


@pytest.mark.parametrize(
    ("reads", "served"),
    [
        # A double space split across two reads of one request line.
        ((b"GET /a", b"  HTTP/1.1\r\nHost: x\r\n\r\n"), 0),
        # A clean read (a complete request ending in CRLF), then a bad line in the next.
        ((b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"GET  /b HTTP/1.1\r\nHost: x\r\n\r\n"), 1),
        # A valid request whose header value holds a double space, then a bad line.
        (
            (
                b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: b  c\r\n\r\n"
                b"GET  /b HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            1,
        ),
    ],
    ids=["split-line", "clean-read-then-bad", "double-space-value-then-bad"],
)
def test_request_line_single_spaces_across_reads(
    backend: str, reads: tuple[bytes, ...], served: int
) -> None:
    # RFC 9112 §3: single SP separators, however the line is split across reads.
    with (
        run_server(echo_app, backend=backend) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
    ):
        for data in reads:
            sock.sendall(data)
            time.sleep(0.05)
        sock.settimeout(TIMEOUT)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.count(b"HTTP/1.1 200 OK") == served
    assert raw.count(b"HTTP/1.1 400 Bad Request") == 1
    assert b"connection: close" in raw.rpartition(b"HTTP/1.1 400")[2].lower()
    assert b"GET /b" not in raw


def test_chunked_both_ways(backend: str) -> None:
    def chunks() -> Any:
        yield b"hello "
        yield b"world"

    with run_server(echo_app, backend=backend) as running:
        response = httpx.post(running.url + "/c", content=chunks(), timeout=TIMEOUT)
        assert response.text == "POST /c 1.1 hello world"
        with httpx.stream("GET", running.url + "/download", timeout=TIMEOUT) as streamed:
            assert streamed.headers["transfer-encoding"] == "chunked"
            assert len(streamed.read()) == 32 * 65536


def test_large_upload_and_download_intact(backend: str) -> None:
    payload = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    with run_server(echo_app, backend=backend) as running:
        response = httpx.post(running.url + "/sha", content=payload, timeout=30)
        assert response.text == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
        download = httpx.get(running.url + "/download", timeout=TIMEOUT)
        assert download.content == b"d" * (2 * 1024 * 1024)


def test_streaming_response_arrives_before_it_ends(backend: str) -> None:
    release = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        while not release.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"last"})

    with (
        run_server(app, backend=backend) as running,
        httpx.stream("GET", running.url, timeout=TIMEOUT) as response,
    ):
        chunks = response.iter_raw()
        assert next(chunks) == b"first"  # the app has not produced "last" yet
        release.set()
        assert b"".join(chunks) == b"last"


def test_streaming_request_body_arrives_progressively(backend: str) -> None:
    seen: list[bytes] = []
    got_first = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["body"])
            if message["body"]:
                got_first.set()
            if not message["more_body"]:
                break
        await _respond(send, b"".join(seen))

    def body() -> Any:
        yield b"one"
        assert got_first.wait(TIMEOUT)  # the app saw "one" before "two" was sent
        yield b"two"

    with run_server(app, backend=backend) as running:
        assert httpx.post(running.url, content=body(), timeout=TIMEOUT).text == "onetwo"


def test_app_not_reading_pauses_the_socket(backend: str) -> None:
    release = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while not release.is_set():
            await asyncio.sleep(0.01)
        await _respond(send, str(len(await _read_body(receive))).encode())

    size = 64 * 1024 * 1024
    with (
        run_server(app, backend=backend) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        sock.settimeout(0.5)
        sent = 0
        block = b"z" * 1048576
        try:
            while sent < size:
                sent += sock.send(block)
        except TimeoutError:
            pass
        assert sent < size // 2  # buffers filled up: the server stopped reading
        release.set()
        sock.settimeout(TIMEOUT)
        view = b"z" * 1048576
        while sent < size:
            sent += sock.send(view[: size - sent])
        assert sock.recv(65536).endswith(str(size).encode())


def test_slow_client_pauses_the_app(backend: str) -> None:
    sent = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(1000):
            await send({"type": "http.response.body", "body": b"s" * 65536, "more_body": True})
            sent.append(1)
        await send({"type": "http.response.body", "body": b""})

    with (
        run_server(app, backend=backend) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        assert 0 < len(sent) < 200  # far less than 65 MB went out to a client not reading


def test_disconnect_is_reported(backend: str) -> None:
    disconnected = threading.Event()
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _read_body(receive)  # the whole (empty) body
        message = await receive()  # then blocks until the client goes
        if message["type"] == "http.disconnect":
            disconnected.set()
        try:
            await _respond(send, b"too late")
        except OSError as exc:  # ASGI spec 2.4
            errors.append(exc)

    with run_server(app, backend=backend) as running:
        sock = socket.create_connection(running.address, timeout=TIMEOUT)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        sock.close()
        assert disconnected.wait(TIMEOUT)
        time.sleep(0.1)
        assert errors
        assert isinstance(errors[0], OSError)


def test_expect_100_continue_only_when_app_reads(backend: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/read":
            await _respond(send, await _read_body(receive))
        else:
            await _respond(send, b"no thanks", status=417)

    head = b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    with run_server(app, backend=backend) as running:
        with socket.create_connection(running.address, timeout=TIMEOUT) as sock:
            sock.sendall(head % b"read")
            assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"body")
            assert sock.recv(65536).endswith(b"\r\n\r\nbody")
        raw = raw_exchange(running.address, head % b"skip")
        assert raw.startswith(b"HTTP/1.1 417 ")
        assert b"100 Continue" not in raw


def test_http10_client(backend: str) -> None:
    with run_server(echo_app, backend=backend) as running:
        raw = raw_exchange(running.address, b"GET /old HTTP/1.0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
        assert raw.endswith(b"GET /old 1.0 ")
        assert b"connection: close" in raw.lower()
        streamed = raw_exchange(running.address, b"GET /download HTTP/1.0\r\n\r\n")
        head, _, body = streamed.partition(b"\r\n\r\n")
        assert b"chunked" not in head.lower()
        assert body == b"d" * (2 * 1024 * 1024)
        kept = raw_exchange(
            running.address,
            b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
        )
        assert kept.count(b"HTTP/1.0 200 OK") == 2
        assert b"connection: keep-alive" in kept.lower()


def test_head_keeps_headers_without_body(backend: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _respond(send, b"hello", headers=[(b"content-length", b"5")])

    with run_server(app, backend=backend) as running:
        raw = raw_exchange(
            running.address, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert raw.count(b"content-length: 5\r\n") == 2
        assert b"hello" not in raw


def test_default_headers(backend: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"x-app", b"1")] if scope["path"] == "/plain" else [(b"server", b"mine")]
        await _respond(send, b"ok", headers=headers)

    with run_server(app, backend=backend, server={"headers": ["X-Extra: yes"]}) as running:
        response = httpx.get(running.url + "/plain", timeout=TIMEOUT)
        assert response.headers["server"] == "palfrey"
        assert response.headers["x-extra"] == "yes"
        assert response.headers["date"].endswith(" GMT")
        overridden = httpx.get(running.url + "/own", timeout=TIMEOUT)
        assert overridden.headers.get_list("server") == ["mine"]
    with run_server(
        app, backend=backend, server={"server_header": False, "date_header": False}
    ) as running:
        response = httpx.get(running.url + "/plain", timeout=TIMEOUT)
        assert "server" not in response.headers
        assert "date" not in response.headers


def test_scope_and_root_path(backend: str) -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(dict(scope))
        await _respond(send, b"ok")

    with run_server(app, backend=backend, server={"root_path": "/api"}) as running:
        httpx.get(running.url + "/items/a%20b?x=1", timeout=TIMEOUT)
    scope = scopes[0]
    assert scope["path"] == "/api/items/a b"
    assert scope["raw_path"] == b"/api/items/a%20b"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == b"x=1"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == running.address
    assert scope["scheme"] == "http"
    assert scope["http_version"] == "1.1"
    assert (b"host", f"{running.address[0]}:{running.address[1]}".encode()) in scope["headers"]
    assert "http.response.pathsend" in scope["extensions"]
    assert "tls" not in scope["extensions"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pathsend(backend: str, loop: str, tmp_path: Any) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(bytes(range(256)) * 8192)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(target)})

    with (
        run_server(app, backend=backend, loop=loop) as running,
        httpx.Client(base_url=running.url, timeout=TIMEOUT) as client,
    ):
        for _ in range(2):  # the connection stays usable after a file
            response = client.get("/")
            assert response.content == target.read_bytes()
            assert response.headers["content-length"] == str(256 * 8192)


def test_app_errors(backend: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/before":
            raise RuntimeError("boom")
        if scope["path"] == "/after":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("boom")
        if scope["path"] == "/nothing":
            return
        await _respond(send, b"fine")

    with run_server(app, backend=backend) as running:
        assert httpx.get(running.url + "/before", timeout=TIMEOUT).status_code == 500
        assert httpx.get(running.url + "/nothing", timeout=TIMEOUT).status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(running.url + "/after", timeout=TIMEOUT)
        assert httpx.get(running.url + "/ok", timeout=TIMEOUT).text == "fine"


def test_keep_alive_timeout_closes_idle_connections(backend: str) -> None:
    with (
        run_server(echo_app, backend=backend, timeouts={"keep_alive": 0.2}) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert 0.1 < time.monotonic() - start < 2.0


def test_concurrency_limit_answers_503(backend: str) -> None:
    release = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while scope["path"] == "/slow" and not release.is_set():
            await asyncio.sleep(0.01)
        await _respond(send, b"ok")

    with (
        run_server(app, backend=backend, limits={"concurrency": 1}) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as slow,
    ):
        slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        assert httpx.get(running.url, timeout=TIMEOUT).status_code == 503
        release.set()
        assert slow.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_graceful_shutdown_lets_in_flight_requests_finish(backend: str) -> None:
    started = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(0.3)
        await _respond(send, b"finished")

    with run_server(app, backend=backend) as running:
        idle = socket.create_connection(running.address, timeout=TIMEOUT)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).endswith(b"finished")  # now an idle keep-alive connection
        started.clear()
        result: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: result.append(httpx.get(running.url, timeout=TIMEOUT))
        )
        client.start()
        assert started.wait(TIMEOUT)
        running.stop()
        client.join(TIMEOUT)
        assert result[0].text == "finished"
        assert result[0].headers["connection"] == "close"
        assert idle.recv(1) == b""  # idle keep-alive connections are closed
        idle.close()


def test_graceful_shutdown_timeout_cancels(backend: str) -> None:
    cancelled = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with (
        run_server(app, backend=backend, timeouts={"graceful_shutdown": 0.2}) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        start = time.monotonic()
        running.stop()
        assert time.monotonic() - start < 2.0
        assert cancelled.is_set()


def test_graceful_shutdown_answers_a_request_arriving_on_an_idle_connection(
    backend: str,
) -> None:
    # RFC 9112 §9.6: a request already on its way to an idle keep-alive connection when
    # shutdown begins is answered with `Connection: close`, not met by a reset.
    with run_server(echo_app, backend=backend) as running:
        sock = socket.create_connection(running.address, timeout=TIMEOUT)
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        running.call(running.server.shutdown)
        time.sleep(0.2)
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"\r\nconnection: close\r\n" in data
        assert data.endswith(b"GET /second 1.1 ")


def test_graceful_shutdown_closes_idle_connections_after_the_grace(backend: str) -> None:
    # The grace is min(1 s, keep-alive timeout, graceful timeout / 2): 0.4 s here.
    with run_server(echo_app, backend=backend, timeouts={"keep_alive": 0.4}) as running:
        idle = socket.create_connection(running.address, timeout=TIMEOUT)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 OK")
        silent = socket.create_connection(running.address, timeout=TIMEOUT)  # never sends
        time.sleep(0.1)
        start = time.monotonic()
        running.call(running.server.shutdown)
        assert idle.recv(1) == b""  # a FIN (half-close), not a reset
        assert silent.recv(1) == b""
        assert 0.2 < time.monotonic() - start < 1.5
        idle.close()
        silent.close()
        running.stop()
        assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_graceful_shutdown_under_keep_alive_load_fails_no_request(backend: str, loop: str) -> None:
    """Keep-alive clients hammer the server while it shuts down: every request sent gets
    its whole response; each connection ends with a `Connection: close` response. Clients
    do not retry, and do not reconnect once told to close (the listeners are gone)."""
    clients, per_client = 8, 3000
    sent = [0] * clients
    failures: list[str] = []
    closed = [False] * clients

    def run(index: int) -> None:
        with httpx.Client(base_url=running.url, timeout=TIMEOUT) as client:
            for number in range(per_client):
                if index % 2:
                    time.sleep(0.002 * (number % 5))  # some connections sit idle a moment
                sent[index] += 1
                try:
                    response = client.get(f"/{index}/{number}")
                except httpx.HTTPError as exc:
                    failures.append(f"client {index} request {number}: {exc!r}")
                    return
                if response.text != f"GET /{index}/{number} 1.1 ":
                    failures.append(f"client {index} request {number}: {response.text!r}")
                    return
                if response.headers.get("connection") == "close":
                    closed[index] = True
                    return

    with run_server(echo_app, backend=backend, loop=loop) as running:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + TIMEOUT
        while min(sent) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        running.stop()
        for thread in threads:
            thread.join(TIMEOUT)
    assert failures == []
    assert all(closed), (closed, sent)
    assert max(sent) < per_client  # the shutdown happened while they were busy


def test_max_requests_stops_the_server(backend: str) -> None:
    with run_server(echo_app, backend=backend, limits={"max_requests": 3}) as running:
        with httpx.Client(base_url=running.url, timeout=TIMEOUT) as client:
            for _ in range(3):
                assert client.get("/").status_code == 200
        deadline = time.monotonic() + TIMEOUT
        while running.server.started.is_set() and running._thread.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_curl(backend: str) -> None:
    with run_server(echo_app, backend=backend) as running:
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "5",
                "-d",
                "from curl",
                running.url + "/c",
                running.url + "/d",
            ],
            capture_output=True,
            check=True,
            timeout=10,
        )
        assert out.stdout == b"POST /c 1.1 from curlPOST /d 1.1 from curl"


@pytest.mark.parametrize(
    ("connection", "upgrade", "switched"),
    [
        (b"keep-alive, Upgrade, HTTP2-Settings", b"foo, h2c", True),
        (b"Upgrade,HTTP2-Settings", b"h2c", True),
        (b"xupgrade, HTTP2-Settings", b"h2c", False),
        (b"Upgrade, HTTP2-Settings", b"h2cx", False),
    ],
)
def test_h2c_upgrade_reads_connection_and_upgrade_as_token_lists(
    backend: str, connection: bytes, upgrade: bytes, switched: bool
) -> None:
    # RFC 7540 §3.2 with RFC 9110 §7.6.1/§7.8 token lists, read as for WebSocket: a
    # request that does not ask for h2c is plain HTTP/1.1, its body framed by length.
    request = (
        b"POST /t HTTP/1.1\r\nHost: x\r\nConnection: "
        + connection
        + b"\r\nUpgrade: "
        + upgrade
        + b"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello"
    )
    with run_server(echo_app, backend=backend, http2={"enabled": True}) as running:
        raw = raw_exchange(running.address, request)
    if switched:
        assert raw.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), raw[:200]
    else:
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200]
        assert raw.endswith(b"POST /t 1.1 hello"), raw[-200:]
