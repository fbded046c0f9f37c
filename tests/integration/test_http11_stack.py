"""Palfrey with the rest of the stack: lifespan, TLS, UNIX sockets, Starlette, the
process entry point and its signals and exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from palfrey.config.model import Config
from palfrey.server import Server, StartupFailure
from tests.helpers.server import make_config, run_server

TIMEOUT = 5.0
ROOT = Path(__file__).resolve().parents[2]


async def state_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        scope["state"]["answer"] = 42
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = f"{sorted(scope['state'])} {scope['scheme']} {'tls' in scope['extensions']}"
    scope["state"]["mutated"] = True  # a copy: the next request must not see it
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


@pytest.mark.parametrize("backend", ["h11", "httptools"])
def test_lifespan_state_in_every_scope(backend: str) -> None:
    with run_server(state_app, backend=backend, lifespan={"mode": "on"}) as running:
        for _ in range(2):
            response = httpx.get(running.url, timeout=TIMEOUT)
            assert response.text == "['answer'] http False"


def test_startup_failure_raises() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "nope"})

    async def main() -> None:
        server = Server(make_config(lifespan={"mode": "on"}), app)
        await asyncio.wait_for(server.serve(), TIMEOUT)

    with pytest.raises(StartupFailure):
        asyncio.run(main())


def test_serve_inside_a_running_loop() -> None:
    async def main() -> str:
        server = Server(make_config(), state_app)
        task = asyncio.ensure_future(server.serve())
        await asyncio.wait_for(server.started.wait(), TIMEOUT)
        host, port = server.addresses[0][:2]
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            text = (await client.get(f"http://{host}:{port}/")).text
        server.shutdown()
        await asyncio.wait_for(task, TIMEOUT)
        return text

    assert asyncio.run(main()) == "[] http False"


def test_tls_scope_extension(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    config = make_config(tls={"certfile": str(certfile), "keyfile": str(keyfile)})

    scopes: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"secure"})

    with run_server(app, config=config) as running:
        host, port = running.address
        response = httpx.get(f"https://{host}:{port}/", verify=client_ctx, timeout=TIMEOUT)
    assert response.text == "secure"
    scope = scopes[0]
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert tls["client_cert_chain"] == []


def test_unix_socket_with_curl(tmp_path: Path) -> None:
    path = tmp_path / "palfrey.sock"
    config = Config.model_validate(
        {
            "server": {"uds": str(path)},
            "lifespan": {"mode": "off"},
            "logging": {"access_log": False},
        }
    )
    with run_server(state_app, config=config):
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "--unix-socket", str(path), "http://x/"],
            capture_output=True,
            check=True,
            timeout=10,
        )
        assert out.stdout == b"[] http False"
    assert not path.exists()


def test_starlette_app_end_to_end(tmp_path: Path) -> None:
    starlette = pytest.importorskip("starlette")
    del starlette
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.routing import Route

    done: list[str] = []
    static = tmp_path / "static.txt"
    static.write_bytes(b"static content " * 1000)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield {"greeting": "hello"}

    async def home(request: Request) -> JSONResponse:
        return JSONResponse(
            {"greeting": request.state.greeting},
            background=BackgroundTask(lambda: done.append("background")),
        )

    async def stream(request: Request) -> StreamingResponse:
        async def numbers() -> Any:
            for i in range(5):
                yield f"{i}\n"
                await asyncio.sleep(0)

        return StreamingResponse(numbers())

    async def upload(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    async def file(request: Request) -> FileResponse:
        return FileResponse(static)

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/stream", stream),
            Route("/upload", upload, methods=["POST"]),
            Route("/file", file),
        ],
        lifespan=lifespan,
    )
    for backend in ("h11", "httptools"):
        with (
            run_server(app, backend=backend, lifespan={"mode": "on"}) as running,
            httpx.Client(base_url=running.url, timeout=TIMEOUT) as client,
        ):
            assert client.get("/").json() == {"greeting": "hello"}
            assert client.get("/stream").text == "0\n1\n2\n3\n4\n"
            assert client.post("/upload", content=b"x" * 100000).json() == {"size": 100000}
            assert client.get("/file").content == static.read_bytes()
    assert done == ["background", "background"]


def _spawn(app_source: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "sig_app.py").write_text(textwrap.dedent(app_source))
    script = textwrap.dedent(
        """
        import sys
        from palfrey.config.model import Config
        from palfrey.plan.plan import plan
        from palfrey.plan.realize import apply_logging
        from palfrey.server import Server
        config = plan(Config.model_validate({
            "app": "sig_app:app", "app_dir": sys.argv[1],
            "server": {"port": 0}, "lifespan": {"mode": "on"},
            "timeouts": {"graceful_shutdown": 2},
        }))
        apply_logging(config)
        sys.exit(Server(config).run())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if text in line or not line:
            return seen
    raise AssertionError(f"{text!r} not logged: {seen}")


LIFESPAN_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_exits_zero(sig: int, tmp_path: Path) -> None:
    proc = _spawn(LIFESPAN_APP, tmp_path)
    try:
        assert "running on" in _wait_for(proc, "running on")
        proc.send_signal(sig)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_startup_failure_exits_3(tmp_path: Path) -> None:
    source = """
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no db"})
    """
    proc = _spawn(source, tmp_path)
    try:
        assert proc.wait(10) == 3
    finally:
        proc.kill()
        proc.wait()
