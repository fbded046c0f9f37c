"""Suite-wide fixtures. Tests are hermetic: no PALFREY_* (or uvicorn-compatible)
variables leak in from the machine running them."""

from __future__ import annotations

import os

import pytest

_LEAKY = ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("PALFREY_", "UVICORN_")) or name in _LEAKY:
            monkeypatch.delenv(name, raising=False)
