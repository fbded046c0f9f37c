"""The supervisor: one parent process that binds the listeners and keeps `workers.count`
worker processes serving on them.

The parent never imports the app. It spawns workers (multiprocessing "spawn": a fresh
interpreter, the pickled Plan (palfrey.plan.plan, so workers never import pydantic) and
the listening sockets as file descriptors), pings
each one over a pipe (answered by the worker's event loop, so a blocked loop counts as
hung), replaces dead and hung workers with an exponential back-off, and gives up with
exit status 1 on a crash loop. Signals:

- SIGTERM / SIGINT: every worker drains (drain delay, in-flight requests, lifespan
  shutdown) within its graceful timeout; a second SIGINT forces them.
- SIGHUP: re-read every configuration layer; a valid Config is rolled out one worker at
  a time, each new worker ready before an old one stops; an invalid one is logged.
- SIGTTIN / SIGTTOU: one worker more / fewer.
- SIGUSR1: reopen log files (logrotate), here and in every worker.

With `metrics.enabled` the supervisor serves the one metrics listener: each worker counts
into a shared-memory block the supervisor made for it, and the supervisor folds a
worker's block into its own totals when the worker exits (palfrey.metrics).

Because the parent holds every listening socket for the whole run, a worker that stops
never closes the kernel's accept queue: connections wait there for the other workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from palfrey.exitcodes import EXIT_CRASH_LOOP
from palfrey.plan.listeners import ListenerError
from palfrey.plan.plan import Plan
from palfrey.plan.realize import apply_logging, describe, describe_udp, export_env_file
from palfrey.plan.resolve import ResolveError
from palfrey.workers import sd_notify
from palfrey.workers.messages import Drain, Ping, Pong, Ready, Recycle, Stop
from palfrey.workers.sockets import ListenerSet, reusable, reusable_quic
from palfrey.workers.worker import WorkerArgs, worker_main

if TYPE_CHECKING:
    from palfrey.metrics.block import Block
    from palfrey.metrics.exposition import Scrape

__all__ = ["EXIT_CRASH_LOOP", "Supervisor", "restart_needed"]

logger = logging.getLogger("palfrey.error")

_BACKOFF_START = 0.1
_READY_MARGIN = 30.0
_STOP_MARGIN = 5.0

Reresolve = Callable[[], Plan]


@dataclass(eq=False)
class WorkerHandle:
    """The parent's view of one worker process."""

    number: int
    process: BaseProcess
    conn: Connection
    plan: Plan
    generation: int
    trial: bool
    #: The worker slot: its UDP socket in each QUIC group, and its connection IDs' mark.
    slot: int = 0
    state: str = "starting"  # starting -> ready -> stopping
    expected_exit: bool = False
    ping_sent: float | None = None
    last_pong: float = 0.0
    #: Why the supervisor killed it, when it did ("hung"): the restart reason.
    killed_for: str | None = None
    #: The metrics block it counts into (None: metrics off).
    block: Block | None = None
    ready: asyncio.Future[bool] = field(default_factory=lambda: _future())
    exited: asyncio.Future[int] = field(default_factory=lambda: _future())

    @property
    def pid(self) -> int:
        return self.process.pid or 0


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def restart_needed(old: Plan, new: Plan) -> list[str]:
    """Changed settings that a reload cannot apply; they need a full restart."""
    keys = []
    if old.process.reload != new.process.reload:
        keys.append("reload.*")
    if old.process.health_listener != new.process.health_listener:
        keys.append("health.listener")
    if old.metrics != new.metrics:
        keys.append("metrics.*")
    return keys


class Supervisor:
    """Runs `plan` with `workers.count` supervised worker processes (one with --reload)."""

    def __init__(self, plan: Plan, *, reresolve: Reresolve | None = None) -> None:
        self.plan = plan
        self.reresolve = reresolve
        self.dev_reload = plan.process.reload is not None
        self.target = 1 if self.dev_reload else plan.process.workers
        self.generation = 0
        self.workers: list[WorkerHandle] = []
        self.listeners = ListenerSet({})
        self.retired: list[tuple[int, ListenerSet]] = []
        self.stopping = False
        self.exit_code = 0
        self._numbers = 0
        self.last_start_failure = 0
        self._crashes: list[float] = []
        self._consecutive = 0
        self._stop_event: asyncio.Event | None = None
        self._unchanged = False
        self._ops: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._signals = 0
        self._context = multiprocessing.get_context("spawn")
        # Metrics: the layout every worker's block has, and the supervisor's own block
        # (retired workers' counters, restarts, reloads). Kept for the whole run: a
        # reload that changes `metrics` needs a restart.
        self.metrics = plan.metrics
        self.totals: Block | None = None
        if self.metrics is not None:
            from palfrey.metrics.block import Block
            from palfrey.metrics.layout import Layout

            self.totals = Block(Layout(self.metrics.buckets))
        # HTTP/3 (palfrey.workers.quic_steering): which worker holds each slot, the
        # slots whose workers take new connections, and this run's connection-ID marker.
        self.slots: dict[int, WorkerHandle] = {}
        self.accepting: set[int] = set()
        self.marker = secrets.randbelow(1 << 16)
        self.reset_key = secrets.token_bytes(32)

    # -- entry point ----------------------------------------------------------------

    def run(self) -> int:
        """Bind, supervise until stopped, return the exit code. Raises ListenerError."""
        self.listeners, _ = ListenerSet.open(self.plan, steered=True)
        try:
            self._steer(strict=True)
        except ListenerError:
            self.listeners.close_except()
            raise
        try:
            return asyncio.run(self._main())
        finally:
            self.listeners.close_except()
            for _, retired in self.retired:
                retired.close_except()

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._ops = asyncio.Lock()
        logger.info("Started parent process [%d]", os.getpid())
        for listener, sock in zip(self.plan.listeners, self.listeners.sockets, strict=True):
            tls = listener.tls is not None
            logger.info("Palfrey running on %s (Press CTRL+C to quit)", describe(sock, tls=tls))
        for group in self.listeners.quic.values():
            logger.info("Palfrey serving HTTP/3 on %s", describe_udp(group.sockets[0]))
        self._install_signals(loop)
        health = await self._start_health()
        metrics = await self._start_metrics()
        # Watch from before the first worker starts: a change during boot is a change.
        manifest_watch = None
        manifest = self.plan.process.watch_manifest
        if manifest is not None:
            from palfrey.workers.watch import FileWatch

            manifest_watch = FileWatch([manifest])
        code = await self._boot()
        if code:
            await self._shutdown()
            return code
        sd_notify.ready(f"{len(self.workers)} workers")
        self._spawn_task(self._health_checks())
        if manifest_watch is not None:
            self._spawn_task(self._watch_manifest(manifest_watch))
        if self.dev_reload:
            self._spawn_task(self._watch_code())
        await self._stop_event.wait()
        await self._shutdown()
        if health is not None:
            health.close()
        if metrics is not None:
            metrics.close()
        logger.info("Stopping parent process [%d]", os.getpid())
        return self.exit_code

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, signal.SIGINT)
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        loop.add_signal_handler(signal.SIGTTIN, self._on_scale, 1)
        loop.add_signal_handler(signal.SIGTTOU, self._on_scale, -1)
        loop.add_signal_handler(signal.SIGUSR1, self._on_reopen)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Supervisor task failed", exc_info=task.exception())

    # -- signals --------------------------------------------------------------------

    def _on_stop_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("Received %s; stopping workers gracefully", signal.Signals(sig).name)
            self.request_stop()
            return
        logger.warning("Received %s again; forcing workers to exit", signal.Signals(sig).name)
        for worker in self.workers:
            _signal(worker, signal.SIGINT if self._signals == 2 else signal.SIGKILL)

    def request_stop(self) -> None:
        self.stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def _on_hup(self) -> None:
        if self.stopping:
            return
        logger.info("Received SIGHUP; reloading the configuration")
        self._spawn_task(self.reload(force=True))

    def _on_reopen(self) -> None:
        from palfrey.logging import reopen_log_files

        logger.info("Received SIGUSR1; reopening log files")
        reopen_log_files()
        for worker in self.workers:
            _signal(worker, signal.SIGUSR1)

    def _on_scale(self, delta: int) -> None:
        if self.stopping or self.dev_reload:
            return
        self.target = max(1, self.target + delta)
        logger.info(
            "Received %s; now %d workers", "SIGTTIN" if delta > 0 else "SIGTTOU", self.target
        )
        self._spawn_task(self._reconcile())

    # -- starting and stopping workers ------------------------------------------------

    def _spawn(self, *, trial: bool) -> WorkerHandle:
        slot = next(n for n in range(len(self.slots) + 1) if n not in self.slots)
        for group in self.listeners.quic.values():
            group.ensure(slot + 1)  # raises ListenerError
        self._numbers += 1
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        block = self._new_block()
        args = WorkerArgs(
            plan=self.plan,
            sockets=self.listeners.sockets,
            conn=child_conn,
            number=self._numbers,
            quic=self.listeners.quic_sockets(slot),
            slot=slot,
            marker=self.marker,
            reset_key=self.reset_key,
            metrics_block=block,
        )
        process = self._context.Process(
            target=worker_main, args=(args,), name=f"palfrey-worker-{self._numbers}"
        )
        process.start()
        child_conn.close()
        worker = WorkerHandle(
            number=self._numbers,
            process=process,
            conn=parent_conn,
            plan=self.plan,
            generation=self.generation,
            trial=trial,
            block=block,
            slot=slot,
        )
        self.slots[slot] = worker
        self.workers.append(worker)
        loop = asyncio.get_running_loop()
        loop.add_reader(parent_conn.fileno(), self._on_message, worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)
        logger.info("Started worker process [%d]", worker.pid)
        return worker

    async def _start_worker(self, *, trial: bool) -> WorkerHandle | None:
        """Spawn a worker and wait until it serves; None if it failed to start."""
        try:
            worker = self._spawn(trial=trial)
        except (ListenerError, ValueError) as exc:
            logger.error("Cannot start a worker: %s", exc)
            self.last_start_failure = 1
            return None
        startup = worker.plan.server.lifespan.startup_timeout
        timeout = (startup or 0.0) + _READY_MARGIN if startup is not None else None
        waiting: set[asyncio.Future[Any]] = {worker.ready, worker.exited}
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if worker.ready.done() and worker.ready.result():
            return worker
        if not done:
            logger.error("Worker [%d] did not start within %.0f s; killing it", worker.pid, timeout)
            _signal(worker, signal.SIGKILL)
        self.last_start_failure = await worker.exited
        return None

    async def _stop_worker(self, worker: WorkerHandle, *, drain: bool = False) -> None:
        """Ask a worker to finish its in-flight requests and exit; kill it after its
        graceful timeout (plus its drain delay and lifespan shutdown)."""
        if worker.exited.done():
            return
        worker.state = "stopping"
        worker.expected_exit = True
        self._accepts(worker, False)
        # A message that cannot be delivered means the worker's end of the pipe is closed:
        # it is already exiting (its own SIGTERM from a process-group signal, or a crash).
        # No SIGTERM then: once its event loop has closed, the default action would kill
        # a worker that is finishing cleanly and its exit 0 would read as a signal death.
        # The timeout below still kills a worker that hangs on the way out.
        _send(worker, Drain() if drain else Stop())
        timeout = _stop_timeout(worker.plan, drain=drain)
        try:
            await asyncio.wait_for(asyncio.shield(worker.exited), timeout)
        except asyncio.TimeoutError:
            logger.warning("Worker [%d] did not stop in %.0f s; killing it", worker.pid, timeout)
            _signal(worker, signal.SIGKILL)
            await worker.exited

    def _on_message(self, worker: WorkerHandle) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            return
        if isinstance(message, Pong):
            worker.ping_sent = None
            worker.last_pong = asyncio.get_running_loop().time()
        elif isinstance(message, Ready):
            worker.state = "ready"
            self._accepts(worker, True)
            worker.last_pong = asyncio.get_running_loop().time()
            if not worker.ready.done():
                worker.ready.set_result(True)
        elif isinstance(message, Recycle) and not self.stopping and worker.state == "ready":
            self._spawn_task(self._recycle(worker))

    def _on_exit(self, worker: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.conn.fileno())
        worker.process.join(1.0)  # the sentinel closes a moment before the zombie is reapable
        code = worker.process.exitcode
        self._read_last_words(worker)
        worker.conn.close()
        self._retire_block(worker)
        self._accepts(worker, False)
        if self.slots.get(worker.slot) is worker:
            del self.slots[worker.slot]
        if worker in self.workers:
            self.workers.remove(worker)
        was_ready = worker.state != "starting"
        if not worker.ready.done():
            worker.ready.set_result(was_ready)
        if not worker.exited.done():
            worker.exited.set_result(code if code is not None else -1)
        self._close_retired()
        if worker.expected_exit or self.stopping:
            level = logging.INFO if code == 0 else logging.WARNING
            logger.log(level, "Worker [%d] exited with %s", worker.pid, describe_exit(code))
            return
        if worker.trial and not was_ready:
            logger.error("New worker [%d] failed to start (%s)", worker.pid, describe_exit(code))
            return
        self._crashed(worker, code)

    def _read_last_words(self, worker: WorkerHandle) -> None:
        """A Ready the worker sent just before it died may still be in the pipe: the exit
        and the message can be seen in the same loop turn, exit first. Read it, so a worker
        that served and then crashed is replaced as a crash, not taken for one that never
        started (which, during the first boot, stops the whole server)."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if isinstance(message, Ready) and worker.state == "starting":
                    worker.state = "ready"
        except (EOFError, OSError):
            pass

    def _crashed(self, worker: WorkerHandle, code: int | None) -> None:
        self._count_restart(worker.killed_for or "crash")
        what = "died" if worker.state != "starting" else "failed to start"
        if code == 0:
            logger.warning("Worker [%d] exited with exit code 0; replacing it", worker.pid)
            self._spawn_task(self._reconcile())
            return
        logger.error("Worker [%d] %s with %s", worker.pid, what, describe_exit(code))
        if self.dev_reload:
            logger.info("Waiting for a file change before starting it again")
            return
        now = asyncio.get_running_loop().time()
        window = self.plan.process.crash_window
        if self._crashes and now - self._crashes[-1] > window:
            self._consecutive = 0
        self._crashes = [t for t in self._crashes if now - t <= window] + [now]
        self._consecutive += 1
        limit = self.plan.process.crash_limit
        if len(self._crashes) >= limit:
            logger.critical(
                "Workers crashed %d times within %.0f s (workers.crash_limit / "
                "workers.crash_window): giving up. Fix the crash and start Palfrey again.",
                len(self._crashes),
                window,
            )
            self.exit_code = EXIT_CRASH_LOOP
            self.request_stop()
            return
        backoff = _BACKOFF_START * 2 ** (self._consecutive - 1)
        delay = min(backoff, self.plan.process.restart_backoff_max)
        logger.info("Replacing it in %.1f s", delay)
        asyncio.get_running_loop().call_later(delay, self._replace_later)

    def _replace_later(self) -> None:
        if not self.stopping:
            self._spawn_task(self._reconcile())

    # -- HTTP/3 steering ----------------------------------------------------------------

    def _accepts(self, worker: WorkerHandle, accepting: bool) -> None:
        """Let new QUIC connections reach `worker`'s slot, or stop them (its own
        connections' packets reach it either way until it exits)."""
        if not self.listeners.quic or self.slots.get(worker.slot) is not worker:
            return
        before = len(self.accepting)
        if accepting:
            self.accepting.add(worker.slot)
        else:
            self.accepting.discard(worker.slot)
        if len(self.accepting) != before:
            self._steer()

    def _steer(self, *, strict: bool = False) -> None:
        """Attach the steering program with the current accepting slots. `strict` (at
        start-up) turns a refusal into a ListenerError: without the program a QUIC
        connection's packets would be spread over the workers."""
        accepting = sorted(self.accepting)
        for group in self.listeners.quic.values():
            try:
                group.steer(self.marker, accepting)
            except OSError as exc:
                message = (
                    f"cannot attach the program that keeps each HTTP/3 connection in one "
                    f"worker to {group.spec} (SO_ATTACH_REUSEPORT_CBPF: {exc.strerror or exc}); "
                    "allow that setsockopt (a container's seccomp profile may forbid it) "
                    "or run one worker"
                )
                if strict:
                    raise ListenerError(message) from None
                logger.error("%s", message)

    # -- whole-pool operations --------------------------------------------------------

    async def _boot(self) -> int:
        """Start the first workers together; the exit code of one that failed, else 0."""
        assert self._ops is not None
        async with self._ops:
            started = await asyncio.gather(
                *(self._start_worker(trial=True) for _ in range(self.target))
            )
        failed = [w for w in started if w is None]
        if not failed:
            for worker in self.workers:
                worker.trial = False
            return 0
        if self.dev_reload:
            logger.error("The app failed to start; waiting for a file change")
            return 0
        self.exit_code = 3 if self.last_start_failure == 3 else 1
        logger.error("A worker failed to start; stopping (exit code %d)", self.exit_code)
        return self.exit_code

    async def _reconcile(self) -> None:
        assert self._ops is not None
        async with self._ops:
            await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        active = [w for w in self.workers if w.state != "stopping"]
        while len(active) < self.target and not self.stopping:
            worker = await self._start_worker(trial=False)
            if worker is None:
                return
            active.append(worker)
        for worker in sorted(active, key=lambda w: w.number)[self.target :]:
            await self._stop_worker(worker)

    async def _recycle(self, worker: WorkerHandle) -> None:
        """max_requests: replace one worker, the new one ready before the old stops."""
        assert self._ops is not None
        async with self._ops:
            if self.stopping or worker not in self.workers or worker.state != "ready":
                return
            logger.info("Recycling worker [%d] (limits.max_requests)", worker.pid)
            replacement = await self._start_worker(trial=True)
            if replacement is None:
                return
            replacement.trial = False
            self._count_restart("max_requests")
            await self._stop_worker(worker)

    async def reload(self, *, force: bool) -> bool:
        """Re-read the configuration and roll it out; False when it was not applied."""
        assert self._ops is not None
        sd_notify.reloading()
        self._unchanged = False
        try:
            ok = await self._reload(force=force)
        finally:
            sd_notify.ready(f"{len(self.workers)} workers")
        self._count_reload("unchanged" if self._unchanged else "success" if ok else "failure")
        return ok

    async def _reload(self, *, force: bool) -> bool:
        assert self._ops is not None
        new = self._read_plan()
        if new is None:
            return False
        if new == self.plan and not force:
            logger.info("Configuration unchanged")
            self._unchanged = True
            return True
        for key in restart_needed(self.plan, new):
            logger.warning("%s changed: it takes effect only after a full restart", key)
        async with self._ops:
            if self.stopping:
                return False
            try:
                listeners, _ = ListenerSet.open(
                    new,
                    reuse=reusable(self.listeners),
                    reuse_quic=reusable_quic(self.listeners),
                    steered=True,
                )
            except ListenerError as exc:
                logger.error("Reload failed, keeping the current configuration: %s", exc)
                return False
            previous = (self.plan, self.listeners, self.generation)
            self.plan, self.listeners = new, listeners
            self.generation += 1
            old = [w for w in self.workers if w.generation < self.generation]
            export_env_file(new)  # new workers inherit the reloaded env file's variables
            # A canary: if the new config's first worker cannot start, nothing changed.
            first = await self._start_worker(trial=True)
            if first is None:
                export_env_file(previous[0])
                self.plan, self.listeners, self.generation = previous
                listeners.close_except(self.listeners)
                logger.error(
                    "Reload failed: a worker with the new configuration did not start; "
                    "the current workers keep serving"
                )
                return False
            first.trial = False
            apply_logging(new)
            self.target = 1 if self.dev_reload else new.process.workers
            logger.info(
                "Rolling out the new configuration to %d workers, one at a time", self.target
            )
            self.retired.append((previous[2], previous[1]))
            replaced = 1
            for worker in old:
                if self.stopping:
                    break
                if replaced >= self.target:
                    await self._stop_worker(worker)
                    continue
                if worker is not old[0]:
                    successor = await self._start_worker(trial=True)
                    if successor is None:
                        break
                    successor.trial = False
                    replaced += 1
                self._count_restart("reload")
                await self._stop_worker(worker)
            await self._reconcile_locked()
            self._close_retired()
            logger.info("Reload complete: %d workers on the new configuration", len(self.workers))
            return True

    def _read_plan(self) -> Plan | None:
        if self.reresolve is None:
            return self.plan
        try:
            return self.reresolve()
        except ResolveError as exc:
            logger.error("Reload failed, keeping the current configuration.")
            for line in str(exc).splitlines():
                logger.error("%s", line)
            return None
        except Exception as exc:  # a broken file the parsers choke on in a new way
            logger.error("Reload failed, keeping the current configuration: %s", exc)
            return None

    def _close_retired(self) -> None:
        keep = []
        for generation, listeners in self.retired:
            if any(w.generation <= generation for w in self.workers):
                keep.append((generation, listeners))
            else:
                listeners.close_except(self.listeners)
        self.retired = keep

    async def _shutdown(self) -> None:
        self.stopping = True
        sd_notify.stopping()
        for task in list(self._tasks):
            task.cancel()
        workers = list(self.workers)
        if workers:
            logger.info("Waiting for %d workers to finish", len(workers))
        await asyncio.gather(*(self._stop_worker(w, drain=True) for w in workers))

    # -- periodic work ----------------------------------------------------------------

    async def _health_checks(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            process = self.plan.process
            interval, timeout = process.healthcheck_interval, process.healthcheck_timeout
            await asyncio.sleep(min(0.5, interval, timeout / 2))
            now = loop.time()
            for worker in list(self.workers):
                if worker.state != "ready":
                    continue
                if worker.ping_sent is not None:
                    if now - worker.ping_sent > timeout:
                        logger.error(
                            "Worker [%d] did not answer the health check within %.1f s "
                            "(its event loop is blocked); killing it",
                            worker.pid,
                            timeout,
                        )
                        worker.killed_for = "hung"
                        _signal(worker, signal.SIGKILL)
                elif now - worker.last_pong >= interval:
                    worker.ping_sent = now
                    _send(worker, Ping())

    async def _watch_manifest(self, watch: Any) -> None:
        from palfrey.workers.watch import POLL_INTERVAL

        while True:
            await asyncio.sleep(POLL_INTERVAL)
            if watch.changed():
                manifest = self.plan.process.watch_manifest
                logger.info("%s changed; reloading the configuration", manifest)
                await self.reload(force=False)

    async def _watch_code(self) -> None:
        from palfrey.workers.reload import ChangeWatcher

        assert self.plan.process.reload is not None
        async for changes in ChangeWatcher(self.plan.process.reload).changes():
            names = ", ".join(sorted({str(path) for path in changes})[:5])
            logger.warning("Detected changes in %s. Reloading...", names)
            assert self._ops is not None
            async with self._ops:
                self.generation += 1
                old = [w for w in self.workers if w.generation < self.generation]
                new = await self._start_worker(trial=True)
                if new is None:
                    continue
                new.trial = False
                for worker in old:
                    self._count_restart("reload")
                    await self._stop_worker(worker)

    # -- metrics ------------------------------------------------------------------------

    def _new_block(self) -> Block | None:
        if self.totals is None:
            return None
        from palfrey.metrics.block import Block
        from palfrey.metrics.recorder import count_spawn

        count_spawn(self.totals)
        return Block(self.totals.layout)

    def _retire_block(self, worker: WorkerHandle) -> None:
        """Fold an exited worker's counters into the totals (they must never go back)."""
        block, worker.block = worker.block, None
        if block is not None and self.totals is not None:
            self.totals.add_counters(block)
            block.close()

    def _count_restart(self, reason: str) -> None:
        if self.totals is not None:
            from palfrey.metrics.recorder import count_restart

            count_restart(self.totals, reason)

    def _count_reload(self, outcome: str) -> None:
        if self.totals is not None:
            from palfrey.metrics.recorder import count_reload

            count_reload(self.totals, outcome)

    def scrape(self) -> Scrape:
        """What /metrics shows now: every live worker's block and the totals."""
        from palfrey.metrics.exposition import Scrape
        from palfrey.server import plan_info

        assert self.totals is not None
        live = [w.block for w in self.workers if w.block is not None]
        alive = sum(1 for w in self.workers if w.process.exitcode is None)
        http2 = self.plan.connections.http2 is not None
        return Scrape(
            self.totals.layout,
            live,
            totals=self.totals,
            workers=alive,
            info=plan_info(self.plan),
            stream_protocols=("HTTP/2",) if http2 else (),
        )

    async def _start_metrics(self) -> asyncio.AbstractServer | None:
        if self.metrics is None:
            return None
        from palfrey.metrics.endpoint import serve_metrics
        from palfrey.plan.realize import bind

        sock = bind(self.metrics.listener)
        return await serve_metrics(sock, self.scrape, where=describe(sock).partition("://")[2])

    async def _start_health(self) -> asyncio.AbstractServer | None:
        spec = self.plan.process.health_listener
        if spec is None:
            return None
        from palfrey.workers.health import open_health_listener, serve_health

        sock = open_health_listener(spec)
        return await serve_health(
            sock,
            self.plan.server.health,
            live=lambda: not self.stopping or self.exit_code == 0,
            ready=lambda: not self.stopping and any(w.state == "ready" for w in self.workers),
        )


def _stop_timeout(plan: Plan, *, drain: bool) -> float | None:
    server = plan.server
    graceful = server.graceful_shutdown
    if graceful is None:
        return None  # the operator asked to wait for in-flight requests forever
    lifespan = server.lifespan.shutdown_timeout or 0.0
    delay = server.drain_delay if drain else 0.0
    return delay + graceful + lifespan + _STOP_MARGIN


def _send(worker: WorkerHandle, message: object) -> bool:
    try:
        worker.conn.send(message)
    except (OSError, ValueError):
        return False
    return True


def _signal(worker: WorkerHandle, sig: int) -> None:
    if worker.pid and worker.process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)
