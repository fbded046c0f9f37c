"""Run a Palfrey Server on port 0 for a test and hand back the address it bound.

    with run_server(app, backend="httptools", timeouts={"keep_alive": 1}) as running:
        httpx.get(running.url + "/")

The server runs on its own event loop in a background thread, so tests can use blocking
clients (httpx, raw sockets, curl subprocesses). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from palfrey.config.model import Config
from palfrey.server import Server

START_TIMEOUT = 10.0


def make_config(backend: str = "h11", **sections: Any) -> Config:
    """A test config: loopback, port 0, quiet, lifespan off, short graceful shutdown; `sections` are
    nested overrides such as `limits={"max_body_size": 10}` or top-level keys."""
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "logging": {"access_log": False},
        "timeouts": {"graceful_shutdown": 2.0},
        "http": {"backend": backend},
        "lifespan": {"mode": "off"},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return Config.model_validate(data)


class RunningServer:
    """A Server serving in a thread: `address`, `url`, `stop()`, and its `error`."""

    def __init__(self, server: Server, loop_name: str = "asyncio") -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._loop_name = loop_name
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="palfrey-test")

    def start(self) -> RunningServer:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("palfrey did not start in time")
        if self.error is not None:
            raise self.error
        return self

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.addresses[0][:2]
        return (host, port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def _run(self) -> None:
        factory: Any = asyncio.new_event_loop
        if self._loop_name == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        loop = self.loop = factory()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        serving = asyncio.ensure_future(self.server.serve())
        started = asyncio.ensure_future(self.server.started.wait())
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        self._ready.set()
        await serving

    def call(self, function: Any, *args: Any) -> None:
        """Run `function(*args)` on the server's loop."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(function, *args)

    def stop(self, timeout: float = START_TIMEOUT) -> None:
        if self._thread.is_alive() and self.loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(self.server.shutdown)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("palfrey did not stop in time")


@contextlib.contextmanager
def run_server(
    app: Any,
    *,
    backend: str = "h11",
    loop: str = "asyncio",
    config: Config | None = None,
    **sections: Any,
) -> Iterator[RunningServer]:
    """Serve `app` for the duration of the block; raise if it failed to start."""
    if config is None:
        config = make_config(backend, **sections)
    running = RunningServer(Server(config, app), loop).start()
    try:
        yield running
    finally:
        running.stop()
