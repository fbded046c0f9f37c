"""The ASGI lifespan protocol: startup and shutdown events around serving.

Modes (as uvicorn's `--lifespan`): "on" requires the app to support lifespan, "auto" uses
it when the app does and carries on when it raises before answering, "off" never sends
it. The app's `state` dict is filled during startup; every request scope gets a shallow
copy of it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from palfrey.asgi.settings import LifespanSettings
from palfrey.asgi.types import ASGIApp, Message

logger = logging.getLogger("palfrey.error")


class LifespanFailure(Exception):
    """Startup failed (the app said so, raised in "on" mode, or timed out): exit code 3."""


class Lifespan:
    """Runs the app's lifespan task and exchanges startup/shutdown with it."""

    def __init__(self, app: ASGIApp, settings: LifespanSettings) -> None:
        self.app = app
        self.mode = settings.mode
        self.startup_timeout = settings.startup_timeout
        self.shutdown_timeout = settings.shutdown_timeout
        self.state: dict[str, Any] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._startup: asyncio.Future[str] | None = None
        self._shutdown: asyncio.Future[str] | None = None
        self._unsupported = False
        self._error: str | None = None

    async def startup(self) -> None:
        """Send lifespan.startup and wait for the answer; raise LifespanFailure."""
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self._startup = loop.create_future()
        self._shutdown = loop.create_future()
        logger.info("Waiting for application startup.")
        self._task = loop.create_task(self._main())
        await self._queue.put({"type": "lifespan.startup"})
        outcome = await self._wait(self._startup, self.startup_timeout, "startup")
        if outcome == "complete":
            logger.info("Application startup complete.")
        elif outcome in ("unsupported", "returned"):
            return
        else:
            if self._error:
                logger.error(self._error)
            logger.error("Application startup failed. Exiting.")
            if not self._task.done():
                self._task.cancel()
            raise LifespanFailure(self._error or f"lifespan startup {outcome}")

    async def shutdown(self) -> None:
        """Send lifespan.shutdown and wait (bounded) for the answer."""
        if self._task is None or self._unsupported or self._shutdown is None:
            return
        if self._task.done():
            return
        logger.info("Waiting for application shutdown.")
        await self._queue.put({"type": "lifespan.shutdown"})
        outcome = await self._wait(self._shutdown, self.shutdown_timeout, "shutdown")
        if outcome == "complete":
            logger.info("Application shutdown complete.")
        else:
            if self._error:
                logger.error(self._error)
            logger.error("Application shutdown failed.")
        if not self._task.done():
            self._task.cancel()

    async def _wait(self, future: asyncio.Future[str], timeout: float | None, what: str) -> str:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            self._error = f"Application {what} timed out after {timeout} seconds."
            return "timeout"

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            self._app_raised(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            # An app that returns without answering simply has no lifespan (as uvicorn).
            self._settle("returned")

    def _app_raised(self, exc: BaseException) -> None:
        assert self._startup is not None
        if isinstance(exc, asyncio.CancelledError):
            return
        if not self._startup.done() and self.mode == "auto":
            self._unsupported = True
            logger.info("ASGI 'lifespan' protocol appears unsupported.")
            self._startup.set_result("unsupported")
            return
        logger.error("Exception in 'lifespan' protocol", exc_info=exc)
        self._settle("failed")

    def _settle(self, outcome: str) -> None:
        for future in (self._startup, self._shutdown):
            if future is not None and not future.done():
                future.set_result(outcome)

    async def receive(self) -> Message:
        return await self._queue.get()

    async def send(self, message: Message) -> None:
        assert self._startup is not None
        assert self._shutdown is not None
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self._startup.done():
                raise RuntimeError(f"Unexpected {kind!r}: startup already answered")
            if kind.endswith("failed"):
                self._error = message.get("message") or None
            self._startup.set_result(kind.rsplit(".", 1)[1])
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if not self._startup.done() or self._shutdown.done():
                raise RuntimeError(f"Unexpected {kind!r}")
            if kind.endswith("failed"):
                self._error = message.get("message") or None
            self._shutdown.set_result(kind.rsplit(".", 1)[1])
        else:
            raise RuntimeError(f"Unexpected lifespan message {kind!r}")
