"""One server process: listeners, connections, lifespan and graceful shutdown.

`Server(config).run()` is what the CLI calls (it picks the event loop and installs signal
handlers); `await Server(config, app).serve()` runs inside an existing loop, for tests
and embedding, and reports the addresses it bound in `server.addresses` once
`server.started` is set. `config` is a validated `palfrey.Config` or its pydantic-free
copy (palfrey.config.runtime); the server reads only the latter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from palfrey.asgi.app_loading import adapt, import_from_string, load_app
from palfrey.asgi.lifespan import Lifespan, LifespanFailure
from palfrey.build import registry
from palfrey.build.listeners import bind_listeners, close_listeners, describe
from palfrey.build.malloc import apply_mmap_threshold, apply_top_pad
from palfrey.build.tls import create_ssl_context
from palfrey.config.runtime import RuntimeConfig
from palfrey.logging import AccessLogger
from palfrey.protocols.context import ASGIApp, ConnectionContext, Scope, ServerState
from palfrey.protocols.http11_response import DefaultHeaders
from palfrey.protocols.limits import HTTPLimits
from palfrey.protocols.websocket_core import WebSocketSettings
from palfrey.workers.health import drain_delay, health_app

if TYPE_CHECKING:
    from palfrey.config.model import Config

logger = logging.getLogger("palfrey.error")

STARTUP_FAILURE = 3
"""Exit code of a process whose lifespan startup failed (as uvicorn)."""

_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

DRAIN_IDLE_GRACE = 1.0
"""Graceful shutdown: the longest an idle keep-alive connection stays open after the
listeners close, so a request already on its way is answered with `Connection: close`
(RFC 9112 §9.6) rather than reset. The grace used is the smallest of this, the
keep-alive timeout and half the graceful-shutdown timeout (see `drain_grace`)."""


class StartupFailure(Exception):
    """The server could not start serving (lifespan startup failed)."""


class Server:
    """Serves one Config's app on its listeners until asked to stop."""

    def __init__(self, config: RuntimeConfig | Config, app: Any | None = None) -> None:
        if not isinstance(config, RuntimeConfig):
            # Embedding code and tests hold the validated pydantic Config (so pydantic is
            # loaded already); everything below reads the plain runtime copy.
            from palfrey.config.model import to_runtime

            config = to_runtime(config)
        self.config = config
        self._app_object = app
        self.app: ASGIApp | None = None
        self.started = asyncio.Event()
        self.should_exit = False
        self.force_exit = False
        self.addresses: list[Any] = []
        self.state = ServerState()
        self.lifespan: Lifespan | None = None
        self._exit: asyncio.Event | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._owned_sockets: list[socket.socket] = []
        # Process model (palfrey.workers): readiness turns false from the start of
        # shutdown; `drain_delay_on_stop` is cleared for rolling restarts; the live TLS
        # context is kept so certificate renewals can be loaded into it in place.
        self.draining = False
        self.drain_delay_on_stop = True
        self.ssl_context: Any = None

    # -- entry points --------------------------------------------------------------

    def run(self, sockets: list[socket.socket] | None = None) -> int:
        """Serve until SIGINT/SIGTERM on a new event loop; return the exit code."""
        factory = loop_factory(self.config.server.loop)
        try:
            run_on_loop(self._serve_with_signals(sockets), factory)
        except StartupFailure:
            return STARTUP_FAILURE
        return 0

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, serve until `shutdown()`, then stop gracefully. Raises StartupFailure."""
        self._exit = asyncio.Event()
        if self.should_exit:
            self._exit.set()
        await self.startup(sockets)
        try:
            await self._exit.wait()
        finally:
            await self.stop()

    def shutdown(self) -> None:
        """Ask the server to stop gracefully (thread-safe from the loop's thread)."""
        self.should_exit = True
        if self._exit is not None:
            self._exit.set()

    def handle_exit(self, sig: int) -> None:
        """Signal handler: first signal drains gracefully, a second forces exit."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.shutdown()

    # -- startup -------------------------------------------------------------------

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        apply_top_pad(config.server.malloc_top_pad)
        apply_mmap_threshold(config.server.malloc_mmap_threshold)
        self.app = self._load_app()
        lifespan = self.lifespan = Lifespan(
            self.app,
            mode=config.lifespan.mode,
            startup_timeout=config.lifespan.startup_timeout,
            shutdown_timeout=config.lifespan.shutdown_timeout,
        )
        try:
            await lifespan.startup()
        except LifespanFailure as exc:
            raise StartupFailure(str(exc)) from exc
        if sockets is None:
            sockets = self._owned_sockets = bind_listeners(config)
        ctx = self._context(self.app, lifespan.state)
        ctx.app = health_app(ctx.app, config.health, self)
        protocol = _protocol_class(config)
        alpn: tuple[str, ...] = ("http/1.1",)
        if config.http2.enabled:  # HTTP/2 beside HTTP/1.1 on every listener
            from palfrey.protocols.negotiation import negotiating

            protocol = negotiating(config, protocol)
            alpn = ("h2", "http/1.1")
        tls = create_ssl_context(config.tls, alpn) if config.tls.enabled else None
        self.ssl_context = tls
        loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(
                lambda: protocol(ctx), sock=sock, ssl=tls, backlog=config.server.backlog
            )
            self._servers.append(server)
            self.addresses.append(sock.getsockname())
            logger.info(
                "Palfrey running on %s (Press CTRL+C to quit)", describe(sock, tls=tls is not None)
            )
        self.started.set()

    def _load_app(self) -> ASGIApp:
        if self._app_object is None:
            return load_app(self.config)
        return adapt(self._app_object, self.config.interface)

    def _context(self, app: ASGIApp, app_state: dict[str, Any]) -> ConnectionContext:
        config = self.config
        state = self.state
        if config.limits.max_requests is not None:
            jitter = random.randint(0, config.limits.max_requests_jitter)
            state.request_budget = config.limits.max_requests + jitter
            state.on_budget_spent = self._budget_spent
        return ConnectionContext(
            app=app,
            state=state,
            limits=HTTPLimits.from_config(config),
            defaults=DefaultHeaders(
                server_header=config.server.server_header,
                date_header=config.server.date_header,
                extra=config.server.headers,
            ),
            root_path=config.server.root_path,
            app_state=app_state,
            concurrency=config.limits.concurrency,
            access_log=_access_logger(config),
            proxy=_proxy_hook(config),
            reset_contextvars=config.server.reset_contextvars,
            websocket=WebSocketSettings.from_config(config),
        )

    def _budget_spent(self) -> None:
        logger.warning(
            "Maximum request limit of %d exceeded. Terminating process.",
            self.state.total_requests,
        )
        self.shutdown()

    # -- shutdown ------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop accepting, drain connections within the graceful timeout, run lifespan
        shutdown, release the listeners."""
        await drain_delay(self)
        logger.info("Shutting down")
        state = self.state
        state.shutting_down = True
        state.drain_grace = drain_grace(self.config)
        for server in self._servers:
            server.close()
        for conn in list(state.connections):
            _shutdown_connection(conn)
        await self._drain(self.config.timeouts.graceful_shutdown)
        for conn in list(state.connections):
            _abort_connection(conn)
        for cycle in list(state.cycles):
            if cycle.task is not None and not cycle.task.done():
                cycle.task.cancel()
        if self.lifespan is not None and not self.force_exit:
            await self.lifespan.shutdown()
        close_listeners(self._owned_sockets)
        self._owned_sockets = []
        closer = getattr(self.app, "shutdown", None)
        if callable(closer):  # the WSGI adapter's thread pool
            closer()
        logger.info("Finished server process [%d]", os.getpid())

    async def _drain(self, timeout: float | None) -> None:
        """Wait for open connections and running app tasks, up to `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        state = self.state
        if state.connections or state.cycles:
            logger.info("Waiting for connections to close. (CTRL+C to force quit)")
        while (state.connections or state.cycles) and not self.force_exit:
            if deadline is not None and loop.time() >= deadline:
                logger.warning("Graceful shutdown timed out: cancelling remaining requests.")
                return
            await asyncio.sleep(0.02)

    # -- signals -------------------------------------------------------------------

    async def _serve_with_signals(self, sockets: list[socket.socket] | None) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in _HANDLED_SIGNALS:
                try:
                    loop.add_signal_handler(sig, self.handle_exit, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                    signal.signal(sig, lambda s, f: loop.call_soon_threadsafe(self.handle_exit, s))
        try:
            await self.serve(sockets)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


def drain_grace(config: RuntimeConfig) -> float:
    """How long idle keep-alive connections are kept open during a graceful shutdown:
    min(DRAIN_IDLE_GRACE, keep-alive timeout, graceful timeout / 2). Half the graceful
    timeout leaves room for the half-close that follows (LINGER in http11_base) before
    the remaining connections are aborted at the graceful deadline."""
    grace = min(DRAIN_IDLE_GRACE, config.timeouts.keep_alive)
    graceful = config.timeouts.graceful_shutdown
    if graceful is not None:
        grace = min(grace, graceful / 2)
    return grace


def _shutdown_connection(conn: Any) -> None:
    closer = getattr(conn, "shutdown", None)
    if closer is not None:
        closer()


def _abort_connection(conn: Any) -> None:
    abort = getattr(conn, "abort", None)
    if abort is not None:
        abort()


def _protocol_class(config: RuntimeConfig) -> Callable[[ConnectionContext], asyncio.Protocol]:
    if registry.http1_backend(config) == "httptools":
        from palfrey.protocols.http11_httptools import HTTPToolsConnection

        return HTTPToolsConnection
    from palfrey.protocols.http11_h11 import H11Connection

    return H11Connection


def _access_logger(config: RuntimeConfig) -> Callable[[Scope, int, int, float], None] | None:
    if not config.logging.access_log:
        return None
    access = AccessLogger()
    if not access.enabled:
        return None

    def log(scope: Scope, status: int, size: int, duration: float) -> None:
        access.log(
            scope["client"],
            scope.get("method", "GET"),  # a WebSocket scope has none: its handshake's
            scope["path"],
            scope["query_string"],
            scope["http_version"],
            status,
            size=size,
            duration=duration,
        )

    return log


def _proxy_hook(config: RuntimeConfig) -> Callable[[Scope], None] | None:
    if not config.proxy.headers:
        return None
    from palfrey.asgi.proxy_headers import TrustedProxies

    return TrustedProxies(config.proxy.forwarded_allow_ips).apply


# -- event loops -------------------------------------------------------------------

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(name: str) -> LoopFactory:
    """The event loop factory for `server.loop`: auto, asyncio, uvloop or an import string
    naming a function that returns a loop factory (uvicorn's custom loop setup)."""
    if name == "auto":
        name = "uvloop" if registry.installed("uvloop") else "asyncio"
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    setup = import_from_string(name)
    try:
        factory = setup(use_subprocess=False)
    except TypeError:
        factory = setup()
    return factory if callable(factory) else asyncio.new_event_loop


def run_on_loop(main: Any, factory: LoopFactory) -> None:
    """Run `main` to completion on a new event loop from `factory`."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
        return
    loop = factory()  # pragma: no cover - Python 3.10
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
