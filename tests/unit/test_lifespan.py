"""Lifespan: startup/shutdown exchange, state, modes, failures and timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from palfrey.asgi.lifespan import Lifespan, LifespanFailure, LifespanSettings
from tests.helpers.plans import make_plan

DEFAULTS = make_plan().server.lifespan


def lifespan_of(app: Any, **settings: Any) -> Lifespan:
    """A Lifespan with the default settings (from the model), `settings` replaced."""
    values = {**vars(DEFAULTS), **settings}
    return Lifespan(app, LifespanSettings(**values))


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 5))


async def good_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "lifespan"
    await receive()
    scope["state"]["db"] = "connected"
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})


def test_startup_fills_state_and_shutdown_completes() -> None:
    async def main() -> dict[str, Any]:
        lifespan = lifespan_of(good_app)
        await lifespan.startup()
        await lifespan.shutdown()
        return lifespan.state

    assert run(main()) == {"db": "connected"}


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_failed_message_raises(mode: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailure, match="no database"):
        run(lifespan_of(app, mode=mode).startup())


def test_app_without_lifespan_is_fine_in_auto_mode() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("only http")

    async def main() -> None:
        lifespan = lifespan_of(app, mode="auto")
        await lifespan.startup()
        await lifespan.shutdown()

    run(main())


def test_app_raising_in_on_mode_fails_startup() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("only http")

    with pytest.raises(LifespanFailure):
        run(lifespan_of(app, mode="on").startup())


def test_off_mode_never_calls_the_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("called")

    run(lifespan_of(app, mode="off").startup())


def test_startup_timeout() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    with pytest.raises(LifespanFailure, match="timed out"):
        run(lifespan_of(app, startup_timeout=0.05).startup())


def test_shutdown_timeout_does_not_hang() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.sleep(10)

    async def main() -> None:
        lifespan = lifespan_of(app, shutdown_timeout=0.05)
        await lifespan.startup()
        await lifespan.shutdown()

    run(main())
