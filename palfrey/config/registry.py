"""The option table: every Config field with the names it is known by.

Flags, env names, schema extras and docs all come from here, and this table comes from
the model, so an option is written by hand in exactly one place (its field).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from palfrey.config.model import SECTIONS, Config
from palfrey.config.types import Uvicorn, ValueStyle

ENV_PREFIX = "PALFREY_"
Kind = Literal["bool", "list", "dict", "scalar"]


@dataclass(frozen=True)
class Option:
    """One leaf option of the Config."""

    path: tuple[str, ...]
    field: FieldInfo
    uvicorn: Uvicorn | None
    kind: Kind
    optional: bool
    choices: tuple[str, ...]
    value_style: bool
    secret: bool

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def section(self) -> str | None:
        return self.path[0] if len(self.path) > 1 else None

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def nested_env(self) -> str:
        return ENV_PREFIX + "__".join(self.path).upper()

    @property
    def flat_env(self) -> str | None:
        return self.uvicorn.flat_env if self.uvicorn else None

    @property
    def env_names(self) -> tuple[str, ...]:
        names = [self.nested_env]
        if self.flat_env and self.flat_env != self.nested_env:
            names.append(self.flat_env)
        return tuple(names)

    @property
    def derived_flag(self) -> str:
        """The flag spelled from the key: `http2.max_frame_size` -> `--http2-max-frame-size`."""
        return "--" + "-".join(self.path).replace("_", "-")

    @property
    def cli_flag(self) -> str | None:
        if self.path == ("app",):
            return None  # the positional APP argument
        return self.uvicorn.cli_flag if self.uvicorn else self.derived_flag

    @property
    def default(self) -> Any:
        default = self.field.default
        return None if default is PydanticUndefined else default

    @property
    def json_default(self) -> Any:
        """The default as a manifest would write it (octal modes as "0o666", ...)."""
        dumped = _json_defaults()
        return dumped[self.path[0]][self.path[1]] if self.section else dumped[self.name]

    @property
    def description(self) -> str:
        from palfrey.config.docs import field_docs

        owner = SECTIONS[self.path[0]].__name__ if self.section else Config.__name__
        return field_docs().get((owner, self.name), "")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional[...] from an annotation; report whether None was allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        inner = args[0] if len(args) == 1 else annotation
        return inner, optional
    return annotation, False


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _describe(field: FieldInfo) -> tuple[Kind, bool, tuple[str, ...]]:
    inner, optional = _unwrap(_strip_annotated(field.annotation))
    inner = _strip_annotated(inner)
    origin = typing.get_origin(inner)
    if inner is bool:
        return "bool", optional, ()
    if origin is tuple or inner is tuple:
        return "list", optional, ()
    if origin is dict or inner is dict:
        return "dict", optional, ()
    if origin is Literal:
        return "scalar", optional, tuple(str(arg) for arg in typing.get_args(inner))
    return "scalar", optional, ()


def _option(path: tuple[str, ...], field: FieldInfo) -> Option:
    kind, optional, choices = _describe(field)
    uvicorn = next((m for m in field.metadata if isinstance(m, Uvicorn)), None)
    value_style = any(isinstance(m, ValueStyle) for m in field.metadata)
    inner, _ = _unwrap(_strip_annotated(field.annotation))
    return Option(
        path=path,
        field=field,
        uvicorn=uvicorn,
        kind=kind,
        optional=optional,
        choices=choices,
        value_style=value_style,
        secret=_strip_annotated(inner) is SecretStr,
    )


@cache
def _json_defaults() -> dict[str, Any]:
    return Config().model_dump(mode="json")


@cache
def options() -> tuple[Option, ...]:
    """Every leaf option: top-level keys first, then each section's, in model order."""
    found: list[Option] = []
    for name, field in Config.model_fields.items():
        if name not in SECTIONS:
            found.append(_option((name,), field))
    for section, model in SECTIONS.items():
        for name, field in model.model_fields.items():
            found.append(_option((section, name), field))
    return tuple(found)


@cache
def by_path() -> dict[tuple[str, ...], Option]:
    return {option.path: option for option in options()}


@cache
def by_flat_env() -> dict[str, Option]:
    """Flat env names (PALFREY_HOST, PALFREY_RELOAD_DIRS, ...) and top-level keys."""
    table = {option.flat_env: option for option in options() if option.flat_env}
    for option in options():
        if option.section is None:
            table.setdefault(option.nested_env, option)
    return table


@cache
def by_uvicorn_param() -> dict[str, Option]:
    """uvicorn keyword names accepted by palfrey.run()."""
    return {option.uvicorn.param: option for option in options() if option.uvicorn}


def section_doc(section: str) -> str:
    model: type[BaseModel] = SECTIONS[section]
    return " ".join((model.__doc__ or "").split())
