"""Configuration: the model, its sources and the loader."""

from palfrey.config.loader import ConfigError, Resolved, load_config, resolve
from palfrey.config.model import Config

__all__ = ["Config", "ConfigError", "Resolved", "load_config", "resolve"]
