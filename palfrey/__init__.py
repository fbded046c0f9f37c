"""Palfrey: an ASGI server configured by a validated declarative manifest."""

from palfrey._version import __version__
from palfrey.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "__version__", "load_config"]
