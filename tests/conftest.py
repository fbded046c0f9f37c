"""Suite-wide fixtures. Tests are hermetic: no PALFREY_* (or uvicorn-compatible)
variables leak in from the machine running them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

_LEAKY = ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET")


@pytest.fixture(autouse=True, scope="session")
def _private_plan_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`palfrey` runs store their plans in a cache directory of this session's, not in the
    home directory of whoever runs the suite (tests/integration/test_plan_cache.py uses
    one per test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("PALFREY_", "UVICORN_")) or name in _LEAKY:
            monkeypatch.delenv(name, raising=False)
