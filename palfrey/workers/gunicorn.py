"""Palfrey as a gunicorn worker class: gunicorn's arbiter forks, binds and supervises;
Palfrey serves HTTP in each worker.

    gunicorn main:app -k palfrey.workers.PalfreyWorker -w 2 -b 0.0.0.0:8000

Honoured gunicorn settings: bind (the arbiter's sockets), workers, timeout (the worker's
heartbeat comes from its event loop, so a blocked loop gets the worker killed),
graceful_timeout, keepalive, max_requests and max_requests_jitter, backlog, accesslog
(on/off; lines use Palfrey's format through gunicorn's handlers), errorlog and loglevel,
forwarded_allow_ips and the TLS files (certfile, keyfile, ca_certs, cert_reqs, ciphers).
Everything else comes from Palfrey's own layers: PALFREY_* variables and a manifest named
by PALFREY_CONFIG, below the gunicorn settings above. `PalfreyH11Worker` forces the
pure-Python h11 parser.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from palfrey.plan.plan import Plan
from palfrey.plan.resolve import ResolveError, resolve_plan

__all__ = ["PalfreyH11Worker", "PalfreyWorker"]


class PalfreyWorker(Worker):  # type: ignore[misc]
    """A gunicorn worker running Palfrey's server on the arbiter's sockets."""

    HTTP_BACKEND: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wire_logging()
        self.palfrey_plan: Plan | None = None

    def _wire_logging(self) -> None:
        error = logging.getLogger("palfrey.error")
        error.handlers = self.log.error_log.handlers
        error.setLevel(self.log.error_log.level)
        error.propagate = False
        access = logging.getLogger("palfrey.access")
        if self.cfg.accesslog:
            access.handlers = self.log.access_log.handlers
            access.setLevel(self.log.access_log.level)
            access.propagate = False
            access.disabled = False
        else:
            access.handlers = []
            access.disabled = True

    def gunicorn_overrides(self) -> dict[str, Any]:
        """The Palfrey settings gunicorn's own settings decide."""
        cfg = self.cfg
        timeouts: dict[str, Any] = {
            "keep_alive": cfg.keepalive,
            "graceful_shutdown": cfg.graceful_timeout,
        }
        overrides: dict[str, Any] = {
            "timeouts": timeouts,
            "logging": {"access_log": bool(cfg.accesslog)},
            # The arbiter's sockets are this worker's listeners.
            "server": {
                "backlog": cfg.backlog,
                "bind": [f"fd://{_socket(sock).fileno()}" for sock in self.sockets],
            },
        }
        if cfg.max_requests:
            overrides["limits"] = {"max_requests": self.max_requests, "max_requests_jitter": 0}
        allow = cfg.forwarded_allow_ips
        if allow:
            overrides["proxy"] = {
                "forwarded_allow_ips": allow if isinstance(allow, list) else str(allow).split(",")
            }
        if cfg.is_ssl:
            tls: dict[str, Any] = {"certfile": cfg.certfile, "keyfile": cfg.keyfile}
            if cfg.ca_certs:
                tls["ca_certs"] = cfg.ca_certs
            tls["cert_reqs"] = int(cfg.cert_reqs)
            if cfg.ciphers:
                tls["ciphers"] = cfg.ciphers
            overrides["tls"] = tls
        if self.HTTP_BACKEND is not None:
            overrides["http"] = {"backend": self.HTTP_BACKEND}
        return overrides

    def load_palfrey_plan(self) -> Plan:
        return resolve_plan(environ=os.environ, overrides=self.gunicorn_overrides())

    def init_process(self) -> None:
        try:
            self.palfrey_plan = self.load_palfrey_plan()
        except ResolveError as exc:
            for line in str(exc).splitlines():
                self.log.error(line)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        super().init_process()

    def init_signals(self) -> None:
        # The event loop installs its own handlers in run(); until then, defaults.
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def run(self) -> None:
        from palfrey.server import Server, StartupFailure, loop_factory, run_on_loop

        plan = self.palfrey_plan
        assert plan is not None
        server = Server(plan, self.wsgi)
        try:
            run_on_loop(self._serve(server), loop_factory(plan.server.loop))
        except StartupFailure:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        if not server.started.is_set():
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    async def _serve(self, server: Any) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, server.handle_exit, signal.SIGTERM)

        def quick(sig: int) -> None:
            server.force_exit = True
            server.handle_exit(sig)

        for sig in (signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, quick, sig)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        sockets = [_socket(sock) for sock in self.sockets]
        heartbeat = asyncio.ensure_future(self._heartbeat(server))
        try:
            await server.serve(sockets)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, server: Any) -> None:
        """gunicorn's liveness file, touched from the event loop: a loop blocked longer
        than `timeout` gets this worker killed by the arbiter."""
        interval = min(1.0, self.timeout / 4) if self.timeout else 1.0
        while True:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                server.shutdown()
                return
            await asyncio.sleep(interval)


def _socket(listener: Any) -> Any:
    """The socket object of one of gunicorn's listeners."""
    return getattr(listener, "sock", listener)


class PalfreyH11Worker(PalfreyWorker):
    """PalfreyWorker with the pure-Python h11 HTTP/1.1 parser."""

    HTTP_BACKEND = "h11"
