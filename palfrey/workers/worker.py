"""The worker process side of the supervisor: serve one Plan on inherited sockets and
answer the supervisor over a pipe (the messages are palfrey.workers.messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from palfrey.exitcodes import EXIT_APP_IMPORT, EXIT_CONFIG, EXIT_OK, EXIT_STARTUP
from palfrey.plan.plan import Plan
from palfrey.workers.messages import Drain, Ping, Pong, Ready, Recycle, Stop

if TYPE_CHECKING:
    from palfrey.metrics.block import Block

__all__ = ["EXIT_OK", "WorkerArgs", "worker_main"]

logger = logging.getLogger("palfrey.error")


@dataclass
class WorkerArgs:
    """What a spawned worker receives (pickled; the sockets travel as file descriptors,
    one per listener of the plan, in its order). A worker never imports pydantic."""

    plan: Plan
    sockets: list[socket.socket]
    conn: Connection
    number: int
    #: HTTP/3: this worker's slot socket of each QUIC listener, the slot, and the
    #: connection-ID marker of this supervisor run (palfrey.workers.quic_steering).
    quic: list[socket.socket]
    slot: int
    marker: int
    reset_key: bytes
    #: The supervisor's metrics block for this worker (None: metrics off).
    metrics_block: Block | None = None


def worker_main(args: WorkerArgs) -> None:
    """Entry point of a worker process (multiprocessing spawn target)."""
    # Job-control and reload signals are the supervisor's; a worker ignores them (the
    # default action of TTIN/TTOU would stop the process). SIGUSR1 (reopen log files) is
    # handled by the event loop once it runs.
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    from palfrey.plan.realize import apply_logging, export_env_file

    export_env_file(args.plan)
    apply_logging(args.plan)
    sys.exit(serve_worker(args))


def serve_worker(args: WorkerArgs) -> int:
    from palfrey.asgi.app_loading import AppLoadError
    from palfrey.plan.tls import TLSConfigError
    from palfrey.server import Server, StartupFailure, loop_factory, run_on_loop

    server = Server(args.plan)
    server.metrics_block = args.metrics_block
    server.serve_metrics = False  # the supervisor serves one endpoint for every worker
    try:
        run_on_loop(_serve(server, args), loop_factory(args.plan.server.loop))
    except StartupFailure:
        return EXIT_STARTUP
    except AppLoadError as exc:
        logger.error("%s", exc)
        return EXIT_APP_IMPORT
    except TLSConfigError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    return EXIT_OK


async def _serve(server: Any, args: WorkerArgs) -> None:
    from palfrey.workers.watch import watch_tls

    loop = asyncio.get_running_loop()
    conn = args.conn
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.handle_exit, sig)
    from palfrey.logging import reopen_log_files

    loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)

    def on_message() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The supervisor is gone (killed): nobody will replace or stop us; drain.
            loop.remove_reader(conn.fileno())
            logger.warning("Supervisor gone; shutting down worker [%d]", os.getpid())
            server.shutdown()
            return
        if isinstance(message, Ping):
            _send(conn, Pong())
        elif isinstance(message, Stop):
            server.drain_delay_on_stop = False
            server.shutdown()
        elif isinstance(message, Drain):
            server.shutdown()

    loop.add_reader(conn.fileno(), on_message)
    server.quic_slot, server.quic_marker = args.slot, args.marker
    server.quic_reset_key = args.reset_key
    serving = asyncio.ensure_future(server.serve(args.sockets, args.quic))
    started = asyncio.ensure_future(server.started.wait())
    await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
    watcher = None
    if started.done() and not serving.done():
        _recycle_through_supervisor(server, conn)
        if args.plan.server.watch_tls:
            watcher = asyncio.ensure_future(watch_tls(server))
        _send(conn, Ready(os.getpid()))
    started.cancel()
    try:
        await serving
    finally:
        if watcher is not None:
            watcher.cancel()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())


def _recycle_through_supervisor(server: Any, conn: Connection) -> None:
    """max_requests: ask for a replacement instead of exiting, so workers are recycled one
    at a time and a new one is ready before this one stops."""
    state = server.state
    if state.on_budget_spent is None:
        return

    def spent() -> None:
        logger.info(
            "Maximum request limit of %d reached; asking the supervisor to replace worker [%d]",
            state.total_requests,
            os.getpid(),
        )
        if not _send(conn, Recycle(state.total_requests)):
            server.shutdown()

    state.on_budget_spent = spent


def _send(conn: Connection, message: object) -> bool:
    try:
        conn.send(message)
    except (OSError, ValueError):
        return False
    return True
