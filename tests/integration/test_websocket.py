"""WebSocket black-box tests: the `websockets` client over loopback, both backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers.server import RunningServer, run_server

BACKENDS = ["wsproto", "websockets-sansio"]
TIMEOUT = 10


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    subprotocols = scope["subprotocols"]
    chosen = "chat.v2" if "chat.v2" in subprotocols else None
    await send({"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-hi", b"1")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            scope["state"]["disconnect"] = message
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            code, _, reason = text[6:].partition(":")
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            continue
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


@contextlib.contextmanager
def serve(app: Any, backend: str, http: str = "h11", **websocket: Any) -> Iterator[RunningServer]:
    with run_server(app, backend=http, websocket={"backend": backend, **websocket}) as running:
        yield running


def ws_url(running: RunningServer, path: str = "/ws") -> str:
    host, port = running.address
    return f"ws://{host}:{port}{path}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_text_and_bytes_echo(backend: str, http: str) -> None:
    async def main(url: str) -> None:
        async with connect(url, compression=None) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff" * 5000)
            assert await ws.recv() == b"\x00\xff" * 5000
            await ws.send(["frag", "men", "ted"])  # a fragmented message
            assert await ws.recv() == "fragmented"
            assert ws.response is not None
            assert ws.response.headers["x-hi"] == "1"
            assert ws.response.headers["server"] == "palfrey"

    with serve(echo_app, backend, http) as running:
        run(main(ws_url(running)))


def test_subprotocol_choice(backend: str) -> None:
    async def main(url: str) -> None:
        async with connect(url, subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat.v2"
        async with connect(url) as ws:
            assert ws.subprotocol is None

    with serve(echo_app, backend) as running:
        run(main(ws_url(running)))


def test_close_codes_both_directions(backend: str) -> None:
    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = state
        await echo_app(scope, receive, send)

    async def main(url: str) -> None:
        async with connect(url) as ws:
            await ws.send("close:4001:bye now")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye now")
        async with connect(url) as ws:
            await ws.close(code=4321, reason="client leaving")
        for _ in range(100):
            if state.get("disconnect", {}).get("code") == 4321:
                break
            await asyncio.sleep(0.02)
        assert state["disconnect"]["code"] == 4321
        assert state["disconnect"]["reason"] == "client leaving"

    with serve(app, backend) as running:
        run(main(ws_url(running)))


@pytest.mark.parametrize("offer_window", [False, True])
def test_permessage_deflate_negotiated_and_used(backend: str, offer_window: bool) -> None:
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    factory = ClientPerMessageDeflateFactory(
        server_max_window_bits=10 if offer_window else None,
        client_no_context_takeover=offer_window,
        server_no_context_takeover=offer_window,
    )

    async def main(url: str) -> None:
        async with connect(url, extensions=[factory], compression=None) as ws:
            assert ws.response is not None
            header = ws.response.headers["sec-websocket-extensions"]
            assert header.startswith("permessage-deflate")
            if offer_window:
                assert "server_max_window_bits=10" in header
                assert "server_no_context_takeover" in header
            assert ws.protocol.extensions  # the client compresses its frames
            for size in (10, 70000, 1 << 20):
                text = ("palfrey " * size)[:size]
                await ws.send(text)
                assert await ws.recv() == text

    with serve(echo_app, backend) as running:
        run(main(ws_url(running)))


def test_deflate_off_is_not_negotiated(backend: str) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            assert ws.response is not None
            assert "sec-websocket-extensions" not in ws.response.headers

    with serve(echo_app, backend, per_message_deflate=False) as running:
        run(main(ws_url(running)))


@pytest.mark.parametrize("fragmented", [False, True])
def test_oversize_message_closes_1009(backend: str, fragmented: bool) -> None:
    async def main(url: str) -> None:
        async with connect(url, compression=None) as ws:
            await ws.send("x" * 1000)
            assert len(await ws.recv()) == 1000
            if fragmented:
                await ws.send(["y" * 600, "y" * 600])
            else:
                await ws.send("y" * 1025)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1009

    with serve(echo_app, backend, max_size=1024) as running:
        run(main(ws_url(running)))


def test_denial_response(backend: str) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        headers = [(b"content-type", b"text/plain"), (b"x-why", b"token")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})

    async def main(url: str) -> None:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url):
                pass
        response = info.value.response
        assert response.status_code == 401
        assert response.body == b"no entry"
        assert response.headers["x-why"] == "token"

    with serve(app, backend) as running:
        run(main(ws_url(running)))


def test_close_before_accept_is_403(backend: str) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async def main(url: str) -> None:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url):
                pass
        assert info.value.response.status_code == 403

    with serve(app, backend) as running:
        run(main(ws_url(running)))


def test_app_error_before_accept_is_500_and_after_is_1011(backend: str) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/after":
            await send({"type": "websocket.accept"})
            await receive()
        raise RuntimeError("boom")

    async def main(base: str) -> None:
        with pytest.raises(InvalidStatus) as info:
            async with connect(base + "/before"):
                pass
        assert info.value.response.status_code == 500
        async with connect(base + "/after") as ws:
            await ws.send("hi")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1011

    logging.getLogger("palfrey.error").disabled = True
    try:
        with serve(app, backend) as running:
            run(main(ws_url(running, "")))
    finally:
        logging.getLogger("palfrey.error").disabled = False


def test_200_concurrent_connections(backend: str) -> None:
    async def one(url: str, n: int) -> None:
        async with connect(url, compression=None) as ws:
            for i in range(3):
                await ws.send(f"{n}:{i}")
                assert await ws.recv() == f"{n}:{i}"

    async def main(url: str) -> None:
        await asyncio.gather(*(one(url, n) for n in range(200)))

    with serve(echo_app, backend, http="httptools") as running:
        run(main(ws_url(running)))


def test_shutdown_sends_1012(backend: str) -> None:
    async def main(running: RunningServer) -> None:
        url = ws_url(running)
        clients = [await connect(url) for _ in range(3)]
        for ws in clients:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        for ws in clients:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012
        await asyncio.get_running_loop().run_in_executor(None, stopper.join, TIMEOUT)
        assert not stopper.is_alive()

    with serve(echo_app, backend) as running:
        run(main(running))


def test_scope(backend: str) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    async def main(url: str) -> None:
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        async with connect(url, subprotocols=["a", "b"], additional_headers=headers) as ws:  # type: ignore[list-item]
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()

    config_sections: dict[str, Any] = {
        "websocket": {"backend": backend},
        "server": {"host": "127.0.0.1", "port": 0, "root_path": "/api"},
        "proxy": {"headers": True, "forwarded_allow_ips": ["*"]},
    }
    with run_server(app, **config_sections) as running:
        run(main(ws_url(running, "/chat%20room?x=1")))
    assert seen["type"] == "websocket"
    assert seen["asgi"]["spec_version"] == "2.4"
    assert seen["scheme"] == "wss"
    assert seen["client"][0] == "203.0.113.9"
    assert seen["path"] == "/api/chat room"
    assert seen["raw_path"] == b"/api/chat%20room"
    assert seen["root_path"] == "/api"
    assert seen["query_string"] == b"x=1"
    assert seen["subprotocols"] == ["a", "b"]
    assert seen["http_version"] == "1.1"
    assert "method" not in seen
    assert (b"upgrade", b"websocket") in [(k, v.lower()) for k, v in seen["headers"]]
    assert seen["extensions"] == {"websocket.http.response": {}}
    assert isinstance(seen["state"], dict)


# -- raw handshakes --------------------------------------------------------------------

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
GOOD = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def raw_exchange(running: RunningServer, data: bytes, until: bytes = b"\r\n\r\n") -> bytes:
    with socket.create_connection(running.address, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            received += chunk
            if not chunk or (until and received.count(until) >= data.count(b"HTTP/1.1\r\n")):
                return received


async def http_then_ws(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})
        return
    await echo_app(scope, receive, send)


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (GOOD.replace(b"Version: 13", b"Version: 8"), b"426"),
        (GOOD.replace(b"Sec-WebSocket-Key: " + KEY + b"\r\n", b""), b"400"),
        (GOOD.replace(KEY, b"c2hvcnQ="), b"400"),
        (GOOD.replace(b"GET", b"POST"), b"405"),
    ],
)
def test_bad_handshakes_get_4xx(http: str, request_bytes: bytes, status: bytes) -> None:
    with serve(http_then_ws, "wsproto", http) as running:
        answer = raw_exchange(running, request_bytes, until=b"")
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    if status == b"426":
        assert b"sec-websocket-version: 13" in answer.lower()


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_backend_none_refuses_upgrades_and_http_still_works(http: str) -> None:
    with serve(http_then_ws, "none", http) as running:
        answer = raw_exchange(running, GOOD, until=b"")
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b"WebSocket is not supported" in answer
        plain = raw_exchange(running, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert plain.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_http_request_then_upgrade_on_one_connection(backend: str, http: str) -> None:
    frame = b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"ab", strict=True))
    with (
        serve(http_then_ws, backend, http) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert first.endswith(b"plain")
        sock.sendall(GOOD + frame)  # a frame right behind the handshake
        received = b""
        while not received.endswith(b"\x81\x02hi"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in received


def test_ping_timeout_closes_1011(backend: str) -> None:
    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = state
        await echo_app(scope, receive, send)

    with (
        serve(app, backend, ping_interval=0.1, ping_timeout=0.2) as running,
        socket.create_connection(running.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(GOOD)
        received = b""
        frames: list[tuple[int, bytes]] = []
        while not frames or frames[-1][0] != 0x88:  # never answer pings
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            frames = _control_frames(received.partition(b"\r\n\r\n")[2])
    assert any(first == 0x89 for first, _ in frames)  # at least one ping was sent
    assert frames[-1] == (0x88, (1011).to_bytes(2, "big") + b"keepalive ping timeout")


def _control_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, payload) of each whole unmasked server frame with a short payload
    (pings and the close: a ping's random payload may hold any byte, 0x88 included)."""
    frames = []
    while len(data) >= 2 and len(data) >= 2 + data[1]:
        frames.append((data[0], data[2 : 2 + data[1]]))
        data = data[2 + data[1] :]
    return frames


def test_handshake_timeout_is_503(backend: str) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(5)

    logging.getLogger("palfrey.error").disabled = True
    try:
        with serve(app, backend, handshake_timeout=0.2) as running:
            answer = raw_exchange(running, GOOD, until=b"")
    finally:
        logging.getLogger("palfrey.error").disabled = False
    assert answer.startswith(b"HTTP/1.1 503")


def test_idle_timeout_closes_1001(backend: str) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            await ws.send("x")
            await ws.recv()
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1001

    with serve(echo_app, backend, idle_timeout=0.2) as running:
        run(main(ws_url(running)))


def test_access_log_line(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    config_sections: dict[str, Any] = {
        "websocket": {"backend": backend},
        "logging": {"access_log": True},
    }

    async def main(url: str) -> None:
        async with connect(url) as ws:
            await ws.send("x")
            await ws.recv()

    with (
        caplog.at_level(logging.INFO, logger="palfrey.access"),
        run_server(echo_app, **config_sections) as running,
    ):
        run(main(ws_url(running, "/chat")))
    lines = [r.getMessage() for r in caplog.records if r.name == "palfrey.access"]
    assert any('"GET /chat HTTP/1.1" 101' in line for line in lines), lines


def test_starlette_websocket_route(backend: str) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="json")
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"echo": data, "path": websocket.url.path})
        except WebSocketDisconnect:
            pass

    app = Starlette(routes=[WebSocketRoute("/live", endpoint)])

    async def main(url: str) -> None:
        async with connect(url, subprotocols=["json"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "json"
            await ws.send('{"n": 1}')
            assert await ws.recv() == '{"echo":{"n":1},"path":"/live"}'

    with serve(app, backend) as running:
        run(main(ws_url(running, "/live")))
