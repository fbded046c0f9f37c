"""Palfrey: an ASGI server configured by a validated declarative manifest.

The public names are imported on first use: every `palfrey.*` module import runs this
file, and a serving process (after the `palfrey` command's exec, or a worker) must not
load pydantic through it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from palfrey._version import __version__

if TYPE_CHECKING:
    from palfrey.config import Config, ConfigError, load_config
    from palfrey.main import run
    from palfrey.server import Server

__all__ = ["Config", "ConfigError", "Server", "__version__", "load_config", "run"]

_HOMES = {
    "Config": "palfrey.config.model",
    "ConfigError": "palfrey.config.loader",
    "load_config": "palfrey.config.loader",
    "run": "palfrey.main",
    "Server": "palfrey.server",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
