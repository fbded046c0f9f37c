"""Render a Config as a TOML manifest that loads back to the same Config.

Values that differ from the default are written as keys; defaults are written as
comments, so the output both documents everything and round-trips. Secrets are never
printed: their keys are commented out with a note.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palfrey.config.model import Config
from palfrey.config.registry import Option, options
from palfrey.config.sources import Origin

SCHEMA_DIRECTIVE = "#:schema ./palfrey.schema.json"


def toml_value(value: Any) -> str:
    """One TOML value: strings, numbers, booleans, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("TOML manifests cannot hold inf or nan")
        return repr(value)
    if isinstance(value, (str, Path)):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(name: str) -> str:
    bare = name.replace("_", "").replace("-", "").isalnum() and name.isascii()
    return name if bare else json.dumps(name)


def _line(option: Option, value: Any, shown: Any, origin: Origin | None) -> str:
    """One key: set values as TOML, defaults and secrets as comments."""
    note = f"  # {origin}" if origin is not None else ""
    if option.secret and value is not None:
        return f"# {option.name} = <redacted>{note}"
    if value == option.default:
        text = "(unset)" if value is None else toml_value(shown)
        return f"# {option.name} = {text}{note}"
    if value is None:
        return f'{option.name} = "none"{note}'
    return f"{option.name} = {toml_value(shown)}{note}"


def to_toml(
    config: Config,
    origins: Mapping[tuple[str, ...], Origin] | None = None,
    *,
    schema_directive: str | None = None,
) -> str:
    """The effective config as a manifest; with `origins`, each line names its source."""
    dumped = config.model_dump(mode="json")
    lines: list[str] = [schema_directive] if schema_directive else []
    current: str | None = None
    for option in options():
        section = option.section
        if section != current:
            lines.extend(["", f"[{section}]"])
            current = section
        holder: Any = getattr(config, section) if section else config
        shown = dumped[section][option.name] if section else dumped[option.name]
        origin = origins.get(option.path) if origins is not None else None
        lines.append(_line(option, getattr(holder, option.name), shown, origin))
    return "\n".join(lines) + "\n"
