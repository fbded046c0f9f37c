"""Servers for the conformance corpus: one per (backend, config overrides), started on
port 0 in a background thread and shared by the cases that need that configuration.

CONFORMANCE_SERVER=uvicorn runs the same corpus against uvicorn 0.54 as a reference
(its failures are expected; the docstring of corpus.py lists them).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from tests.conformance.echo_app import EchoApp, Recorder

TARGET = os.environ.get("CONFORMANCE_SERVER", "palfrey")
#: Backend, optionally "+uvloop": the whole corpus also runs on uvloop, whose transports
#: split and deliver reads differently from asyncio's.
BACKENDS: tuple[str, ...] = (
    ("h11", "httptools")
    if TARGET == "uvicorn"
    else ("h11", "httptools", "h11+uvloop", "httptools+uvloop")
)
_START_TIMEOUT = 10.0


class Running(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...

    def stop(self) -> None: ...


@dataclass
class ConformanceServer:
    address: tuple[str, int]
    backend: str
    recorder: Recorder
    _running: Running

    def settle(self) -> None:
        """Return once the server's loop has run everything already scheduled on it, so a
        request it dispatched before closing has reached the app (and the recorder)."""
        loop: asyncio.AbstractEventLoop | None = getattr(self._running, "loop", None)
        if loop is None:  # uvicorn does not expose its loop: a short pause instead
            time.sleep(0.005)
            return
        for _ in range(2):
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(_START_TIMEOUT)

    def stop(self) -> None:
        self._running.stop()


class _UvicornThread:
    """uvicorn.Server in a thread, configured as close to the overrides as uvicorn can."""

    def __init__(self, app: EchoApp, backend: str, overrides: Mapping[str, Any]) -> None:
        import uvicorn

        http = overrides.get("http", {})
        options: dict[str, Any] = {}
        if "max_head_size" in http:
            options["h11_max_incomplete_event_size"] = http["max_head_size"]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            http=backend,
            lifespan="off",
            log_level="critical",
            access_log=False,
            **options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        sockname = self._server.servers[0].sockets[0].getsockname()
        self.address: tuple[str, int] = (sockname[0], sockname[1])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(_START_TIMEOUT)


def _start(backend: str, overrides: Mapping[str, Any]) -> ConformanceServer:
    recorder = Recorder()
    app = EchoApp(recorder)
    running: Running
    if TARGET == "uvicorn":
        running = _UvicornThread(app, backend, overrides)
    else:
        from palfrey.server import Server
        from tests.helpers.server import RunningServer, make_config

        http, _, loop = backend.partition("+")
        config = make_config(http, lifespan={"mode": "off"}, **overrides)
        running = RunningServer(Server(config, app), loop or "asyncio").start()
    return ConformanceServer(running.address, backend, recorder, running)


class ServerPool:
    def __init__(self) -> None:
        self._servers: dict[str, ConformanceServer] = {}

    def get(self, backend: str, overrides: Mapping[str, Any]) -> ConformanceServer:
        key = json.dumps([backend, overrides], sort_keys=True)
        if key not in self._servers:
            self._servers[key] = _start(backend, overrides)
        server = self._servers[key]
        server.recorder.clear()
        return server

    def close(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()
