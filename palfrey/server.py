"""One server process: listeners, connections, lifespan and graceful shutdown.

`Server(plan).run()` serves on a new event loop with signal handlers; `await Server(plan,
app).serve()` runs inside an existing loop, for tests and embedding, and reports the
addresses it bound in `server.addresses` once `server.started` is set. It takes a Plan
(palfrey.plan.plan) or, for embedding, a validated `palfrey.Config`, which it plans
first; it reads nothing but the Plan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from palfrey.asgi.app_loading import adapt, import_from_string, load_app
from palfrey.asgi.health import health_app
from palfrey.asgi.lifespan import Lifespan, LifespanFailure
from palfrey.asgi.types import ASGIApp
from palfrey.plan import realize, registry
from palfrey.plan.plan import Plan
from palfrey.protocols.context import ConnectionContext, ServerState
from palfrey.protocols.http11_response import DefaultHeaders
from palfrey.protocols.settings import HeaderSettings

if TYPE_CHECKING:
    import ssl

    from palfrey.config.model import Config
    from palfrey.metrics.block import Block
    from palfrey.observe import Observers
    from palfrey.plan.plan import ListenerPlan

logger = logging.getLogger("palfrey.error")

STARTUP_FAILURE = 3
"""Exit code of a process whose lifespan startup failed (as uvicorn)."""

_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

DRAIN_IDLE_GRACE = 1.0
"""Graceful shutdown: the longest an idle keep-alive connection stays open after the
listeners close, so a request already on its way is answered with `Connection: close`
(RFC 9112 §9.6) rather than reset. The grace used is the smallest of this, the
keep-alive timeout and half the graceful-shutdown timeout (see `drain_grace`)."""


class Closable(Protocol):
    """A listener being served: asyncio's servers and Palfrey's PROXY listener."""

    def close(self) -> None: ...


class StartupFailure(Exception):
    """The server could not start serving (lifespan startup failed)."""


class Server:
    """Serves one Config's app on its listeners until asked to stop."""

    def __init__(self, plan: Plan | Config, app: Any | None = None) -> None:
        if not isinstance(plan, Plan):
            # Embedding code and tests hold the validated pydantic Config (so pydantic is
            # loaded already): plan it as the command would.
            from palfrey.plan.plan import plan as make_plan

            plan = make_plan(plan)
        self.plan = plan
        self._app_object = app
        self.app: ASGIApp | None = None
        self.started = asyncio.Event()
        self.should_exit = False
        self.force_exit = False
        self.addresses: list[Any] = []
        self.state = ServerState()
        self.lifespan: Lifespan | None = None
        self._exit: asyncio.Event | None = None
        self._servers: list[Closable] = []
        self._owned_sockets: list[socket.socket] = []
        #: HTTP/3: the UDP addresses bound (one per QUIC listener of the plan), and the
        #: worker slot and connection-ID marker (palfrey.workers.quic_steering).
        self.quic_addresses: list[Any] = []
        self.quic_slot = 0
        self.quic_marker = 0
        #: Derives stateless reset tokens: the supervisor's, shared by its workers.
        self.quic_reset_key = os.urandom(32)
        self._quic: list[asyncio.DatagramTransport] = []
        # Process model (palfrey.workers): readiness turns false from the start of
        # shutdown; `drain_delay_on_stop` is cleared for rolling restarts; the live TLS
        # contexts are kept so certificate renewals can be loaded into them in place.
        self.draining = False
        self.drain_delay_on_stop = True
        self.ssl_contexts: dict[ListenerPlan, ssl.SSLContext | None] = {}
        # Metrics (plan.metrics): the block this process counts into (the supervisor's,
        # or one handed across a re-exec; else made at start-up), and whether this
        # process serves the metrics listener (not a supervised worker).
        self.metrics_block: Block | None = None
        self.serve_metrics = True
        self.observers: Observers | None = None
        self._background: list[asyncio.Task[None]] = []
        self._metrics_server: asyncio.AbstractServer | None = None
        self._own_block: Block | None = None  # made here (embedding): released at stop

    # -- entry points --------------------------------------------------------------

    def run(self, sockets: list[socket.socket] | None = None) -> int:
        """Serve until SIGINT/SIGTERM on a new event loop; return the exit code."""
        factory = loop_factory(self.plan.server.loop)
        try:
            run_on_loop(self._serve_with_signals(sockets), factory)
        except StartupFailure:
            return STARTUP_FAILURE
        return 0

    async def serve(
        self, sockets: list[socket.socket] | None = None, quic: list[socket.socket] | None = None
    ) -> None:
        """Start, serve until `shutdown()`, then stop gracefully. Raises StartupFailure."""
        self._exit = asyncio.Event()
        if self.should_exit:
            self._exit.set()
        await self.startup(sockets, quic)
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

    async def startup(
        self, sockets: list[socket.socket] | None = None, quic: list[socket.socket] | None = None
    ) -> None:
        """Load the app, run lifespan startup and start serving on `sockets` (one per
        listener of the plan, in its order; bound here when None) and, for HTTP/3, on the
        UDP sockets `quic` (one per QUIC listener of the plan; bound here when None)."""
        plan = self.plan
        realize.tune_allocator(plan)
        self.app = self._load_app()
        lifespan = self.lifespan = Lifespan(self.app, plan.server.lifespan)
        try:
            await lifespan.startup()
        except LifespanFailure as exc:
            raise StartupFailure(str(exc)) from exc
        if sockets is None:
            specs = [listener.spec for listener in plan.listeners]
            sockets = self._owned_sockets = realize.bind_all(specs, plan.backlog)
        if quic is None and plan.quic:
            quic = realize.bind_quic(plan, sockets)
            self._owned_sockets = [*self._owned_sockets, *quic]
        ctx = self._context(self.app, lifespan.state)
        ctx.app = health_app(ctx.app, plan.server.health, self.ready)
        await self._start_metrics()
        protocol = realize.protocol_factory(plan.connections)
        self.ssl_contexts = realize.ssl_contexts(plan)
        loop = asyncio.get_running_loop()
        advertised = self._alt_svc_contexts(ctx, quic or [])
        for listener, sock in _pair(plan.listeners, sockets):
            tls = self.ssl_contexts[listener]
            listener_ctx = advertised.get(listener.spec, ctx)
            if listener.proxy_protocol is not None:
                self._servers.append(
                    self._proxy_listener(listener, sock, protocol, listener_ctx, tls)
                )
            else:
                server = await loop.create_server(
                    lambda c=listener_ctx: protocol(c),
                    sock=sock,
                    ssl=tls,
                    backlog=plan.backlog,
                )
                self._servers.append(server)
            self.addresses.append(sock.getsockname())
            logger.info(
                "Palfrey running on %s (Press CTRL+C to quit)",
                realize.describe(sock, tls=tls is not None),
            )
        if quic:
            await self._start_quic(ctx, quic)
        self.started.set()

    async def _start_quic(self, ctx: ConnectionContext, sockets: list[socket.socket]) -> None:
        """Serve HTTP/3 on the UDP sockets (palfrey.protocols.http3_aioquic)."""
        make = realize.quic_endpoints(
            self.plan,
            ctx,
            slot=self.quic_slot,
            marker=self.quic_marker,
            reset_key=self.quic_reset_key,
        )
        loop = asyncio.get_running_loop()
        state = self.state

        def accepting() -> bool:
            return not state.shutting_down

        for sock in sockets:
            address = sock.getsockname()
            endpoint = make((str(address[0]), int(address[1])), accepting)
            transport, _ = await loop.create_datagram_endpoint(lambda e=endpoint: e, sock=sock)  # type: ignore[misc]
            self._quic.append(transport)
            self.quic_addresses.append(address)
            logger.info("Palfrey serving HTTP/3 on %s", realize.describe_udp(sock))

    def _alt_svc_contexts(
        self, ctx: ConnectionContext, quic: list[socket.socket]
    ) -> dict[Any, ConnectionContext]:
        """For each TCP listener with a QUIC sibling, a context whose default headers
        advertise it (RFC 7838 §3: `h3=":PORT"; ma=SECONDS`, the same host implied)."""
        settings = self.plan.connections.http3
        if settings is None or settings.alt_svc_max_age is None:
            return {}
        headers = self.plan.connections.headers
        found: dict[Any, ConnectionContext] = {}
        for listener, sock in zip(self.plan.quic, quic, strict=False):
            value = f'h3=":{sock.getsockname()[1]}"; ma={settings.alt_svc_max_age}'
            defaults = DefaultHeaders(
                HeaderSettings(
                    server_header=headers.server_header,
                    date_header=headers.date_header,
                    extra=(*headers.extra, ("alt-svc", value)),
                )
            )
            for spec in listener.beside:
                found[spec] = dataclasses.replace(ctx, defaults=defaults)
        return found

    def _proxy_listener(
        self,
        listener: ListenerPlan,
        sock: socket.socket,
        protocol: Callable[[ConnectionContext], asyncio.Protocol],
        ctx: ConnectionContext,
        tls: ssl.SSLContext | None,
    ) -> Closable:
        """A listener whose connections begin with a PROXY protocol header (read before
        TLS; palfrey.protocols.proxy_listener)."""
        from palfrey.asgi.proxy_headers import TrustedProxies
        from palfrey.protocols.proxy_listener import ProxyListener

        settings = listener.proxy_protocol
        assert settings is not None
        proxy = ProxyListener(
            sock,
            lambda: protocol(ctx),
            settings=settings,
            trusted=TrustedProxies(settings.trusted).is_trusted,
            ssl_context=tls,
            header_timeout=self.plan.connections.limits.header_read,
        )
        proxy.start()
        return proxy

    def ready(self) -> bool:
        """Readiness: serving, and shutdown not begun."""
        return self.started.is_set() and not self.draining and not self.state.shutting_down

    def _load_app(self) -> ASGIApp:
        spec = self.plan.server.app
        if self._app_object is None:
            return load_app(spec)
        return adapt(self._app_object, spec.interface)

    def _context(self, app: ASGIApp, app_state: dict[str, Any]) -> ConnectionContext:
        plan = self.plan
        conn = plan.connections
        state = self.state
        budget = plan.server.max_requests
        if budget is not None:
            state.request_budget = budget + random.randint(0, plan.server.max_requests_jitter)
            state.on_budget_spent = self._budget_spent
        observers = self.observers = self._observers()
        request_id = conn.request_id
        if request_id is not None and request_id.response_header is not None:
            from palfrey.asgi.request_id import echo_request_id

            app = echo_request_id(app, request_id.response_header)
        access = observers.access if observers is not None else None
        return ConnectionContext(
            app=app,
            state=state,
            limits=conn.limits,
            defaults=DefaultHeaders(conn.headers),
            root_path=conn.root_path,
            app_state=app_state,
            concurrency=conn.concurrency,
            observe=observers.request if observers is not None else None,
            observer=observers,
            proxy=_scope_hook(plan, record_peer=access is not None and access.uses_peer),
            reset_contextvars=conn.reset_contextvars,
            websocket=conn.websocket,
        )

    def _observers(self) -> Observers | None:
        """The access log and metrics, as the protocols call them (None: both off)."""
        access = None
        if self.plan.connections.access_log:
            from palfrey.accesslog.sink import access_sink

            access = access_sink(asyncio.get_running_loop())
        metrics = None
        if self.metrics_block is not None or (self.plan.metrics and self.serve_metrics):
            from palfrey.metrics.recorder import Recorder

            metrics = Recorder(self._block())
        if access is None and metrics is None:
            return None
        from palfrey.observe import Observers

        return Observers(access, metrics)

    def _block(self) -> Block:
        if self.metrics_block is None:
            from palfrey.metrics.block import Block
            from palfrey.metrics.layout import Layout

            assert self.plan.metrics is not None
            self.metrics_block = self._own_block = Block(Layout(self.plan.metrics.buckets))
        return self.metrics_block

    async def _start_metrics(self) -> None:
        """Sample the gauges; serve the metrics listener unless a supervisor does."""
        observers, metrics = self.observers, self.plan.metrics
        if observers is None or observers.metrics is None:
            return
        recorder = observers.metrics
        state = self.state
        self._background.append(
            asyncio.ensure_future(recorder.sample(lambda: list(state.connections)))
        )
        if not self.serve_metrics or metrics is None:
            return
        from palfrey.metrics.endpoint import serve_metrics
        from palfrey.metrics.exposition import Scrape

        block = recorder.block
        sock = realize.bind(metrics.listener)
        info = plan_info(self.plan)
        self._metrics_server = await serve_metrics(
            sock,
            lambda: Scrape(block.layout, [block], info=info, stream_protocols=_streams(self.plan)),
            where=realize.describe(sock).partition("://")[2] or str(metrics.listener),
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
        await self._drain_delay()
        logger.info("Shutting down")
        state = self.state
        state.shutting_down = True
        state.drain_grace = drain_grace(self.plan)
        for server in self._servers:
            server.close()
        for conn in list(state.connections):
            _shutdown_connection(conn)
        await self._drain(self.plan.server.graceful_shutdown)
        for conn in list(state.connections):
            _abort_connection(conn)
        for transport in self._quic:
            transport.close()  # after the drain: QUIC connections read from these
        self._quic = []
        for cycle in list(state.cycles):
            if cycle.task is not None and not cycle.task.done():
                cycle.task.cancel()
        if self.lifespan is not None and not self.force_exit:
            await self.lifespan.shutdown()
        realize.close_listeners(self._owned_sockets)
        self._owned_sockets = []
        closer = getattr(self.app, "shutdown", None)
        if callable(closer):  # the WSGI adapter's thread pool
            closer()
        self._stop_observing()
        logger.info("Finished server process [%d]", os.getpid())

    def _stop_observing(self) -> None:
        for task in self._background:
            task.cancel()
        self._background = []
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        if self.observers is not None:
            self.observers.flush()
        # A block made here is left to the garbage collector (it closes its descriptor):
        # a request completing late may still count into it.
        self._own_block = None

    async def _drain_delay(self) -> None:
        """Mark this server not ready and, on a real shutdown, keep accepting and serving
        for `server.drain_delay` seconds (a second Ctrl+C cuts it short). Kubernetes
        removes a pod from its Service endpoints asynchronously after SIGTERM, so requests
        keep arriving for a few seconds; closing the listeners at once would refuse them.
        Rolling restarts (SIGHUP, max_requests) clear `drain_delay_on_stop`."""
        self.draining = True
        delay = self.plan.server.drain_delay
        if not delay or not self.drain_delay_on_stop or self.force_exit:
            return
        logger.info("Draining: readiness fails; still accepting for %.1f s (drain_delay)", delay)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while loop.time() < deadline and not self.force_exit:
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

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


def _pair(
    listeners: tuple[ListenerPlan, ...], sockets: list[socket.socket]
) -> list[tuple[ListenerPlan, socket.socket]]:
    """Each socket with the listener it serves: by position when they are the plan's own
    (one per listener), else (sockets handed in by embedding code) the first listener's
    TLS and ALPN for all, which every listener of a plan shares."""
    if len(listeners) == len(sockets):
        return list(zip(listeners, sockets, strict=True))
    return [(listeners[0], sock) for sock in sockets]


def drain_grace(plan: Plan) -> float:
    """How long idle keep-alive connections are kept open during a graceful shutdown:
    min(DRAIN_IDLE_GRACE, keep-alive timeout, graceful timeout / 2). Half the graceful
    timeout leaves room for the half-close that follows (LINGER in http11_base) before
    the remaining connections are aborted at the graceful deadline."""
    grace = min(DRAIN_IDLE_GRACE, plan.connections.limits.keep_alive)
    graceful = plan.server.graceful_shutdown
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


def _scope_hook(plan: Plan, *, record_peer: bool) -> Callable[[Any], None] | None:
    """Proxy headers and request ids, applied to every new scope (None: neither)."""
    conn = plan.connections
    trusted, request_id = conn.forwarded_allow_ips, conn.request_id
    if trusted is None and request_id is None:
        return None
    from palfrey.asgi.proxy_headers import TrustedProxies
    from palfrey.asgi.request_id import scope_hook

    return scope_hook(
        TrustedProxies(trusted) if trusted is not None else None,
        request_id,
        TrustedProxies(request_id.trusted) if request_id is not None else None,
        record_peer=record_peer,
    )


def plan_info(plan: Plan) -> dict[str, str]:
    """The labels of palfrey_config_info for `plan`."""
    from palfrey._version import __version__

    return {
        "manifest": str(plan.manifest) if plan.manifest is not None else "",
        "hash": plan.config_hash,
        "version": __version__,
    }


def _streams(plan: Plan) -> tuple[str, ...]:
    return ("HTTP/2",) if plan.connections.http2 is not None else ()


# -- event loops -------------------------------------------------------------------

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(name: str) -> LoopFactory:
    """The event loop factory for `server.loop`: auto, asyncio, uvloop or an import string
    naming a function that returns a loop factory (uvicorn's custom loop setup)."""
    name = registry.loop_name(name)
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
