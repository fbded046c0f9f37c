"""WSGIAdapter: PEP 3333 environ, streaming both ways with backpressure, errors, and the
ASGI 2 adapter."""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest

from palfrey.asgi.adapters import ASGI2Adapter
from palfrey.asgi.wsgi import WSGIAdapter, build_environ

TIMEOUT = 10


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), TIMEOUT))

    return wrapper


def http_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/app/caf\u00e9/x",
        "raw_path": b"/app/caf%C3%A9/x",
        "root_path": "/app",
        "query_string": b"a=1&b=%20",
        "headers": [
            (b"host", b"example.com"),
            (b"content-type", b"text/plain"),
            (b"content-length", b"11"),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x_forwarded_for", b"6.6.6.6"),
        ],
        "client": ("192.0.2.1", 5555),
        "server": ("10.0.0.1", 8443),
    }
    scope.update(overrides)
    return scope


class Peer:
    """The server side of one request: a scripted body and recorded sends."""

    def __init__(self, chunks: Iterable[bytes] = (b"",), *, disconnect: bool = False) -> None:
        self.chunks = list(chunks)
        self.disconnect = disconnect
        self.receives = 0
        self.sent: list[dict[str, Any]] = []
        self.on_send: Callable[[dict[str, Any]], Any] | None = None

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if not self.chunks:
            if self.disconnect:
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)
        body = self.chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if self.on_send is not None:
            result = self.on_send(message)
            if asyncio.iscoroutine(result):
                await result

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


# ------------------------------------------------------------------------------ environ


def test_environ_is_pep_3333() -> None:
    environ = build_environ(http_scope(), body=None)
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["PATH_INFO"] == "/caf\u00c3\u00a9/x"  # UTF-8 bytes as latin-1
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("10.0.0.1", "8443")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("192.0.2.1", "5555")
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "11"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["HTTP_HOST"] == "example.com"
    assert environ["HTTP_ACCEPT"] == "text/html,application/json"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_FORWARDED_FOR" not in environ  # underscore names are dropped
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.errors"] is sys.stderr


def test_environ_without_server_or_root_path() -> None:
    scope = http_scope(server=None, root_path="", path="/x", client=None, scheme="http")
    scope["headers"] = [(b"host", b"svc.local:8080")]
    environ = build_environ(scope, body=None)
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("svc.local", "8080")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/x")
    assert "REMOTE_ADDR" not in environ
    scope["headers"] = []
    environ = build_environ(scope, body=None)
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("localhost", "80")


def test_root_path_only_strips_a_whole_segment() -> None:
    environ = build_environ(http_scope(root_path="/app", path="/application"), body=None)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/application")


@run
async def test_passes_wsgiref_validator() -> None:
    peer = Peer([b"hello", b" world"])
    await WSGIAdapter(validator(echo_length))(http_scope(), peer.receive, peer.send)
    assert peer.status == 200
    assert peer.body == b"hello world"


def echo_length(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# ------------------------------------------------------------------------------ request


@run
async def test_body_is_pulled_only_as_the_app_reads() -> None:
    seen: list[tuple[bytes, int]] = []
    peer = Peer([b"aaaa", b"bbbb", b"cccc"])

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        seen.append((stream.read(2), peer.receives))
        seen.append((stream.read(4), peer.receives))
        seen.append((stream.read(), peer.receives))
        seen.append((stream.read(), peer.receives))
        start_response("204 No Content", [])
        return []

    await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)
    assert seen == [(b"aa", 1), (b"aabb", 2), (b"bbcccc", 3), (b"", 3)]
    assert peer.sent == [
        {"type": "http.response.start", "status": 204, "headers": []},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


@run
async def test_app_that_never_reads_never_receives() -> None:
    peer = Peer([b"x" * 10])
    await WSGIAdapter(hello)(http_scope(), peer.receive, peer.send)
    assert peer.receives == 0
    # One-element list: start and the whole body in one crossing, more_body False.
    assert peer.sent[1] == {"type": "http.response.body", "body": b"hello", "more_body": False}


@run
async def test_readline_and_iteration_over_large_chunked_body() -> None:
    lines = [b"line %d\n" % i for i in range(5000)]
    data = b"".join(lines)
    chunks = [data[i : i + 7001] for i in range(0, len(data), 7001)]
    got: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        got["first"] = stream.readline()
        got["limited"] = stream.readline(3)
        got["rest"] = list(stream)
        start_response("200 OK", [])
        return [b"ok"]

    peer = Peer(chunks)
    await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)
    assert got["first"] == b"line 0\n"
    assert got["limited"] == b"lin"
    assert [got["first"], got["limited"] + got["rest"][0], *got["rest"][1:]] == lines


@run
async def test_disconnect_ends_the_body() -> None:
    peer = Peer([b"partial"], disconnect=True)
    peer.chunks = [b"partial"]
    received: list[bytes] = []

    async def receive() -> dict[str, Any]:
        peer.receives += 1
        if peer.receives == 1:
            return {"type": "http.request", "body": b"partial", "more_body": True}
        return {"type": "http.disconnect"}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        received.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b""]

    await WSGIAdapter(app)(http_scope(), receive, peer.send)
    assert received == [b"partial"]


# ----------------------------------------------------------------------------- response


@run
async def test_each_chunk_is_sent_before_the_next_is_produced() -> None:
    first_sent = threading.Event()
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"first"
            # Deadlocks (and times out) unless "first" reached send() already.
            assert first_sent.wait(TIMEOUT)
            yield b""
            yield b"second"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("X-A", "1")])
        return Body()

    peer = Peer()
    peer.on_send = lambda message: message.get("body") == b"first" and first_sent.set()
    await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)
    assert peer.sent == [
        {"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]},
        {"type": "http.response.body", "body": b"first", "more_body": True},
        {"type": "http.response.body", "body": b"second", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    assert closed == [True]


@run
async def test_slow_client_pauses_the_app() -> None:
    """send() blocks (backpressure): the generator is not resumed until it returns."""
    produced: list[int] = []
    release = asyncio.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(3):
            produced.append(i)
            yield b"x"

    peer = Peer()

    async def slow(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message["more_body"]:
            await release.wait()

    peer.on_send = slow
    task = asyncio.ensure_future(WSGIAdapter(app)(http_scope(), peer.receive, peer.send))
    await asyncio.sleep(0.2)
    assert produced == [0]
    release.set()
    await task
    assert produced == [0, 1, 2]


@run
async def test_lazy_start_response_and_write() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        write = start_response("201 Created", [("Content-Type", "text/plain")])
        write(b"written ")
        yield b"yielded"

    peer = Peer()
    await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)
    assert peer.status == 201
    assert peer.body == b"written yielded"


@run
async def test_exc_info_before_headers_replaces_the_response() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Stale", "1")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Error", "1")], sys.exc_info())
        return [b"error page"]

    peer = Peer()
    await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)
    assert peer.status == 500
    assert peer.sent[0]["headers"] == [(b"x-error", b"1")]


@run
async def test_exc_info_after_headers_reraises() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    peer = Peer()
    with pytest.raises(ValueError, match="late failure"):
        await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)
    assert peer.body == b"partial"


@pytest.mark.parametrize(
    ("app", "error"),
    [
        (lambda environ, start_response: [b"no start"], "did not call start_response"),
        (lambda environ, start_response: start_response("OK", []) or [], "invalid WSGI status"),
        (
            lambda environ, start_response: (
                start_response("200 OK", []),
                start_response("200 OK", []),
            ),
            "called again",
        ),
    ],
)
def test_broken_apps_raise(app: Any, error: str) -> None:
    async def go() -> None:
        peer = Peer()
        await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)

    with pytest.raises((RuntimeError, ValueError), match=error):
        asyncio.run(asyncio.wait_for(go(), TIMEOUT))


@run
async def test_client_gone_stops_the_app_quietly() -> None:
    produced: list[int] = []
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            for i in range(100):
                produced.append(i)
                yield b"x"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client disconnected")  # ASGI 2.4

    peer = Peer()
    await WSGIAdapter(app)(http_scope(), peer.receive, send)
    assert produced == [0]
    assert closed == [True]


@run
async def test_cancellation_unblocks_the_thread() -> None:
    finished = threading.Event()
    errors: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()  # blocks: the body never comes
        except OSError as exc:
            errors.append(exc)
        finally:
            finished.set()
        start_response("200 OK", [])
        return [b""]

    peer = Peer([])  # receive() sleeps forever
    adapter = WSGIAdapter(app)
    task = asyncio.ensure_future(adapter(http_scope(), peer.receive, peer.send))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.get_running_loop().run_in_executor(None, finished.wait, TIMEOUT)
    assert len(errors) == 1
    adapter.shutdown()


@run
async def test_contextvars_are_copied_into_the_thread() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("request-42")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [var.get().encode()]

    peer = Peer()
    await WSGIAdapter(app)(http_scope(), peer.receive, peer.send)
    assert peer.body == b"request-42"


# --------------------------------------------------------- lifespan, websocket, httpx


@run
async def test_lifespan_and_websocket() -> None:
    adapter = WSGIAdapter(hello)
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(events)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await adapter({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    await adapter({"type": "websocket"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


@run
async def test_through_httpx() -> None:
    transport = httpx.ASGITransport(app=WSGIAdapter(echo))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/echo", content=b"payload" * 1000)
    assert response.status_code == 200
    assert response.content == b"payload" * 1000


# ---------------------------------------------------------------------------- ASGI 2


@run
async def test_asgi2_adapter() -> None:
    class App:
        def __init__(self, scope: dict[str, Any]) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": self.scope["path"].encode()})

    peer = Peer()
    await ASGI2Adapter(App)(http_scope(path="/v2"), peer.receive, peer.send)
    assert peer.status == 200
    assert peer.body == b"/v2"
