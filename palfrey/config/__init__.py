"""Configuration: the model, its sources and the loader.

The names below are imported on first use: importing the package loads no pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from palfrey.config.loader import ConfigError, Resolved, load_config, resolve
    from palfrey.config.model import Config

__all__ = ["Config", "ConfigError", "Resolved", "load_config", "resolve"]

_HOMES = {
    "Config": "palfrey.config.model",
    "ConfigError": "palfrey.config.loader",
    "Resolved": "palfrey.config.loader",
    "load_config": "palfrey.config.loader",
    "resolve": "palfrey.config.loader",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
