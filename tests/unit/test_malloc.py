"""`server.malloc_top_pad`: glibc's M_TOP_PAD, set once a server starts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from palfrey.plan import malloc
from tests.helpers.server import run_server

GLIBC = malloc.glibc()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_top_pad_is_set_through_mallopt() -> None:
    assert malloc.apply_top_pad(4 << 20, environ={}) is True
    # glibc accepts any size, the default 128 KiB included.
    assert malloc.apply_top_pad(128 * 1024, environ={}) is True


def test_top_pad_left_alone() -> None:
    assert malloc.apply_top_pad(None, environ={}) is False  # "none"
    assert malloc.apply_top_pad(0, environ={}) is False
    # The operator's MALLOC_TOP_PAD_ wins over the manifest.
    assert malloc.apply_top_pad(4 << 20, environ={"MALLOC_TOP_PAD_": "65536"}) is False


@pytest.mark.parametrize(
    ("setting", "expected"), [(None, 4 << 20), ("1MiB", 1 << 20), ("none", None)]
)
def test_server_applies_the_setting_at_startup(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: int | None
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(malloc, "apply_top_pad", seen.append)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sections = {} if setting is None else {"server": {"malloc_top_pad": setting}}
    with run_server(app, **sections) as running:
        assert httpx.get(running.url, timeout=5).text == "ok"
    assert seen == [expected]
