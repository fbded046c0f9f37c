"""One process, no supervisor (`workers.count = 1`): serve, and on SIGHUP (or a manifest
change with `server.reload_on_change`) restart in place by re-executing Palfrey.

The re-exec keeps the process id (what systemd, Docker and the kubelet watch) and the
listening sockets (passed across exec as inherited file descriptors), so no connection
is refused: connections that arrive while the old server drains and the new one starts
wait in the kernel's accept queue. They wait, though, for the drain and the app's
startup; run two or more workers where reloads must not add latency.

A new configuration that does not validate is logged with every error and the process
keeps serving. TLS certificate changes are loaded in place, without a re-exec. A process
started by the `palfrey` command (palfrey.workers.launch) hands the new Plan to its next
image, which serves it without importing pydantic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from palfrey.exitcodes import EXIT_OK, EXIT_STARTUP
from palfrey.plan.plan import Plan
from palfrey.plan.resolve import Reresolver, ResolveError
from palfrey.workers import sd_notify
from palfrey.workers.launch import Launch, reexec
from palfrey.workers.sockets import ListenerSet, adopt_handoff

__all__ = ["SingleProcess"]

logger = logging.getLogger("palfrey.error")


class SingleProcess:
    """Serve `plan` in this process; re-exec on a valid reload."""

    def __init__(
        self,
        plan: Plan,
        app: Any | None = None,
        *,
        reresolve: Reresolver | None = None,
        launched: bool = False,
    ) -> None:
        from palfrey.server import Server

        self.plan = plan
        self.server = Server(plan, app)
        self.reresolve = reresolve
        # Started by the `palfrey` command: the next image can be handed the new Plan.
        # Otherwise (palfrey.run()) it runs the caller's program again, which reads its
        # configuration itself.
        self.launched = launched
        self.next_plan: Plan | None = None
        if plan.metrics is not None:
            self.server.metrics_block = _metrics_block(plan)

    def run(self) -> int:
        """Serve until stopped; returns the exit code (or never returns: re-exec).
        Raises ListenerError, AppLoadError, TLSConfigError like Server.run()."""
        from palfrey.server import StartupFailure, loop_factory, run_on_loop

        listeners, _ = ListenerSet.open(self.plan, reuse=adopt_handoff(os.environ))
        try:
            run_on_loop(self._main(listeners), loop_factory(self.plan.server.loop))
        except StartupFailure:
            listeners.close_except()
            return EXIT_STARTUP
        except BaseException:
            listeners.close_except()
            raise
        if self.next_plan is not None:
            launch = Launch(self.next_plan, self.reresolve)
            block = self.server.metrics_block
            if block is not None:
                # The next image keeps counting where this one stopped.
                os.environ.update(block.handoff_env())
            reexec(launch if self.launched else None, listeners)
        listeners.close_except()
        return EXIT_OK

    async def _main(self, listeners: ListenerSet) -> None:
        from palfrey.workers.watch import FileWatch, watch_tls

        loop = asyncio.get_running_loop()
        server = self.server
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.handle_exit, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        from palfrey.logging import reopen_log_files

        loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)
        health = await self._start_health()
        manifest_watch = None
        manifest = self.plan.process.watch_manifest
        if manifest is not None:
            manifest_watch = FileWatch([manifest])
        # The server gets duplicates: asyncio closes the sockets it serves on, and the
        # originals must survive for a re-exec.
        serving = asyncio.ensure_future(
            server.serve(
                [s.dup() for s in listeners.sockets], [s.dup() for s in listeners.quic_sockets()]
            )
        )
        started = asyncio.ensure_future(server.started.wait())
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        tasks = []
        if server.started.is_set():
            sd_notify.ready()
            if self.plan.server.watch_tls:
                tasks.append(asyncio.ensure_future(watch_tls(server)))
            if manifest_watch is not None:
                tasks.append(asyncio.ensure_future(self._watch_manifest(manifest_watch)))
        try:
            await serving
        finally:
            for task in tasks:
                task.cancel()
            if health is not None:
                health.close()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            if self.next_plan is None:
                sd_notify.stopping()

    def _on_hup(self) -> None:
        logger.info("Received SIGHUP; reloading the configuration")
        self.reload(force=True)

    def reload(self, *, force: bool) -> bool:
        """Validate the new configuration; when valid, stop serving and re-exec."""
        if self.reresolve is None or self.server.should_exit:
            return False
        try:
            new = self.reresolve()
        except ResolveError as exc:
            logger.error("Reload failed, keeping the current configuration.")
            for line in str(exc).splitlines():
                logger.error("%s", line)
            self._count_reload("failure")
            return False
        except Exception as exc:
            logger.error("Reload failed, keeping the current configuration: %s", exc)
            self._count_reload("failure")
            return False
        if new == self.plan and not force:
            logger.info("Configuration unchanged")
            self._count_reload("unchanged")
            return True
        self._count_reload("success")
        logger.info("Restarting in place with the new configuration (re-exec)")
        sd_notify.reloading()
        self.next_plan = new
        self.server.drain_delay_on_stop = False
        self.server.shutdown()
        return True

    def _count_reload(self, outcome: str) -> None:
        block = self.server.metrics_block
        if block is not None:
            from palfrey.metrics.recorder import count_reload

            count_reload(block, outcome)

    async def _watch_manifest(self, watch: Any) -> None:
        from palfrey.workers.watch import POLL_INTERVAL

        while True:
            await asyncio.sleep(POLL_INTERVAL)
            if watch.changed():
                manifest = self.plan.process.watch_manifest
                logger.info("%s changed; reloading the configuration", manifest)
                self.reload(force=False)

    async def _start_health(self) -> asyncio.AbstractServer | None:
        spec = self.plan.process.health_listener
        if spec is None:
            return None
        from palfrey.workers.health import open_health_listener, serve_health

        server = self.server
        return await serve_health(
            open_health_listener(spec),
            self.plan.server.health,
            live=lambda: True,
            ready=lambda: server.ready() and not server.should_exit,
        )


def _metrics_block(plan: Plan) -> Any:
    """The block handed over by the image before this re-exec, or a new one."""
    from palfrey.metrics.block import HANDOFF_ENV, Block, adopt_handoff
    from palfrey.metrics.layout import Layout

    assert plan.metrics is not None
    layout = Layout(plan.metrics.buckets)
    handed = os.environ.get(HANDOFF_ENV)
    block = adopt_handoff(os.environ, layout)
    if block is None and handed:
        logger.warning("metrics.buckets changed: the metrics start again from zero")
    return block if block is not None else Block(layout)
