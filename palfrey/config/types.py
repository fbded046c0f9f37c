"""Value types shared by the config sections: durations, sizes, octal modes, headers.

Each type accepts the forms a person writes in a manifest, an env var or a flag and
stores one canonical Python value, so a Config compares and pickles predictably.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, ByteSize, Field, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"


def _parse_duration(value: Any) -> Any:
    """Turn "30s", "250ms", "5m", "1.5h" or a bare number string into seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError("expected seconds as a number, or a number with ms, s, m or h")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


def _parse_octal(value: Any) -> Any:
    """File modes are octal to people: "660", "0660" and "0o660" all mean 0o660."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", text):
            raise ValueError("expected an octal file mode such as 660 or 0o660")
        return int(text, 8)
    return value


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _parse_header(value: Any) -> Any:
    """A default header is "Name: Value" (uvicorn's --header form) or a [name, value] pair."""
    if isinstance(value, str):
        name, sep, rest = value.partition(":")
        if not sep:
            raise ValueError('expected "Name: Value"')
        value = (name.strip(), rest.strip())
    if isinstance(value, (list, tuple)) and len(value) == 2:
        name, text = str(value[0]), str(value[1])
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name (RFC 9110 §5.1)")
        if any(ch in text for ch in "\r\n\0"):
            raise ValueError("header values cannot contain CR, LF or NUL (RFC 9110 §5.5)")
        return (name, text)
    return value


Seconds = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""A duration in seconds; manifests may write "30s", "250ms", "5m" or "1h"."""

Size = Annotated[
    ByteSize,
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[A-Za-z]*\s*$"},
            ]
        }
    ),
]
"""A size in bytes; manifests may write "64KiB", "16MiB" or a plain integer."""

FileMode = Annotated[
    int,
    BeforeValidator(_parse_octal),
    Field(ge=0, le=0o7777),
    PlainSerializer(lambda mode: f"0o{mode:o}", return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^(0o)?[0-7]{1,4}$"},
            ]
        }
    ),
]
"""A file permission mode; "660" or "0o660" as a string means octal."""

Header = Annotated[
    tuple[str, str],
    BeforeValidator(_parse_header),
    PlainSerializer(lambda pair: f"{pair[0]}: {pair[1]}", return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^[^:]+:.*$"},
                {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            ]
        }
    ),
]
"""A response header added to every response: "Name: Value" or [name, value]."""


@dataclass(frozen=True)
class Uvicorn:
    """Marks a field as the home of a uvicorn 0.54 option.

    `param` is uvicorn's Python parameter name: it gives the flat env name
    (`PALFREY_<PARAM>`, as click's auto env prefix derives it) and the keyword accepted by
    `palfrey.run()`. `flag` is uvicorn's command-line flag, which differs from the param for
    a few options (`--reload-dir` vs `reload_dirs`, `--header` vs `headers`).
    """

    param: str
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.param.replace("_", "-")

    @property
    def flat_env(self) -> str:
        return "PALFREY_" + self.param.upper()


@dataclass(frozen=True)
class Flag:
    """The command-line flag of an option uvicorn does not have, when the one derived from
    its path would be clumsy (`--metrics` for `metrics.enabled`). The derived spelling
    keeps working, hidden from --help."""

    name: str


@dataclass(frozen=True)
class ValueStyle:
    """A boolean flag that takes a value (`--ws-per-message-deflate false`), as uvicorn's does."""


VALUE_STYLE = ValueStyle()
