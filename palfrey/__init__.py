"""Palfrey: an ASGI server configured by a validated declarative manifest."""

from palfrey._version import __version__
from palfrey.config import Config, ConfigError, load_config
from palfrey.main import run
from palfrey.server import Server

__all__ = ["Config", "ConfigError", "Server", "__version__", "load_config", "run"]
