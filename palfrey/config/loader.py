"""Merge the layers, validate once, and explain every problem at once."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from palfrey.config.arguments import Meta, ParsedArgs, parse_args
from palfrey.config.inputs import Input, read_input
from palfrey.config.model import Config, contradictions
from palfrey.config.registry import by_path
from palfrey.config.sources import (
    DEFAULT,
    Layer,
    LayerResult,
    Origin,
    Problem,
    env_layer,
    file_layer,
    mapping_layer,
    platform_env_layer,
    secrets_layer,
    unknown_flat_env,
)


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every reason (CLI exit code 2)."""

    def __init__(self, problems: Sequence[Problem], warnings: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        self.warnings = tuple(warnings)
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"Invalid configuration ({count} problem{'s' if count != 1 else ''}):"
        return "\n".join([head, *(f"  - {problem}" for problem in self.problems)])


@dataclass(frozen=True)
class Resolved:
    """A validated Config and, for each option, where its value came from."""

    config: Config
    origins: Mapping[tuple[str, ...], Origin]
    meta: Meta = field(default_factory=Meta)
    warnings: tuple[str, ...] = ()
    config_file: Path | None = None
    #: Every file the layers read, with a digest of the bytes read (the plan cache's
    #: dependencies); an entry with no digest (a secrets directory) forbids caching.
    inputs: tuple[Input, ...] = ()


def _nest(values: Layer) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path, (value, _origin) in values.items():
        target = data
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return data


def _loc_path(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    parts = tuple(str(item) for item in loc)
    for size in range(len(parts), 0, -1):
        if parts[:size] in by_path():
            return parts[:size]
    return parts


def _yaml_typed(origin: Origin, value: Any, choices: tuple[str, ...]) -> bool:
    """A YAML scalar that was meant as one of the string choices (`mode: on`)."""
    is_yaml = origin.kind == "file" and origin.source.endswith((".yaml", ".yml"))
    return is_yaml and bool(choices) and isinstance(value, (bool, int, float))


def _validation_problems(exc: ValidationError, merged: Layer) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        path = _loc_path(error["loc"])
        option = by_path().get(path)
        key = ".".join(path) or "config"
        message = error["msg"].removeprefix("Value error, ")
        origin = merged.get(path, (None, DEFAULT))[1]
        if option is not None and not option.secret and error["type"] != "missing":
            message += f" (got {error['input']!r})"
            if _yaml_typed(origin, error["input"], option.choices):
                message += "; YAML reads on/off/yes/no and bare numbers as non-strings: quote it"
        problems.append(Problem(f"'{key}': {message}", origin))
    return problems


def _contradiction_problems(config: Config, merged: Layer) -> list[Problem]:
    problems = []
    for keys, message in contradictions(config):
        sources = []
        for key in keys:
            origin = merged.get(tuple(key.split(".")), (None, DEFAULT))[1]
            if origin.kind != "default":
                sources.append(f"{key} from {origin}")
        where = f" ({'; '.join(sources)})" if sources else ""
        problems.append(Problem(f"{message}{where}"))
    return problems


def _read_env_file(
    path: str, environ: dict[str, str], problems: list[Problem], inputs: list[Input]
) -> dict[str, str]:
    """Load a dotenv file under the environment: variables already set win (as uvicorn).

    Returns the names it set, so their origin can say which file they came from.
    """
    if not Path(path).is_file():
        problems.append(Problem(f"env file not found: {path}", Origin("env", "env_file")))
        return {}
    import io

    from dotenv import dotenv_values  # only when an env file is used (about 1 MiB of RSS)

    text = read_input(Path(path), inputs)
    loaded = {}
    for name, value in dotenv_values(stream=io.StringIO(text)).items():
        if value is not None and name not in environ:
            environ[name] = value
            loaded[name] = path
    return loaded


def _first(*candidates: tuple[Any, Origin] | None) -> Any:
    for candidate in candidates:
        if candidate is not None and candidate[0] is not None:
            return candidate[0]
    return None


def _validate(merged: Layer) -> tuple[Config | None, list[Problem]]:
    """Validate once; on errors, also look for contradictions among the valid values, so
    one run reports everything (a bad port must not hide reload + workers)."""
    context = {"defer_contradictions": True}
    try:
        config = Config.model_validate(_nest(merged), context=context)
    except ValidationError as exc:
        problems = _validation_problems(exc, merged)
        bad = {_loc_path(error["loc"]) for error in exc.errors()}
        valid = {path: item for path, item in merged.items() if path not in bad}
        try:
            partial = Config.model_validate(_nest(valid), context=context)
        except ValidationError:
            return None, problems
        return None, problems + _contradiction_problems(partial, valid)
    return config, _contradiction_problems(config, merged)


def _advice(config: Config | None, env: Mapping[str, str]) -> list[str]:
    """Settings that are legal but probably not what was meant."""
    notes = unknown_flat_env(env)
    for name in sorted(env):
        if name.startswith("UVICORN_"):
            notes.append(f"{name} is not read by Palfrey: rename it PALFREY_{name[8:]}")
    if config is not None and not config.reload.enabled:
        fields = config.reload.model_fields_set & {"dirs", "includes", "excludes", "delay"}
        if fields:
            keys = ", ".join(f"reload.{name}" for name in sorted(fields))
            notes.append(f"{keys} has no effect without reload.enabled (--reload)")
    return notes


def _by_source(problem: Problem) -> tuple[int, str, int]:
    origin = problem.origin
    if origin is None:
        return (1, "", 0)
    return (0, origin.source if origin.kind == "file" else "", origin.line or 0)


def resolve(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    parsed: ParsedArgs | None = None,
) -> Resolved:
    """Read every layer and validate: exactly what `palfrey ARGV` would run.

    `environ` defaults to os.environ and is never modified; `overrides` are
    palfrey.run() keywords (uvicorn names or section dicts) at CLI precedence; `parsed`
    is `argv` already parsed (the command parses it once).
    """
    if parsed is None:
        parsed = parse_args(argv or [])
    env = dict(os.environ if environ is None else environ)
    api = mapping_layer(overrides, "palfrey.run") if overrides else LayerResult()
    problems: list[Problem] = [*parsed.layer.problems, *api.problems]
    env_key = ("env_file",)

    # --env-file is read before anything else (SPEC §1), so it can hold PALFREY_* too.
    env_file = _first(parsed.layer.values.get(env_key), api.values.get(env_key))
    env_file = env_file or env.get("PALFREY_ENV_FILE")
    inputs: list[Input] = []
    loaded = _read_env_file(str(env_file), env, problems, inputs) if env_file else {}

    manifest = parsed.meta.config or config_file or env.get("PALFREY_CONFIG")
    files = file_layer(Path(manifest)) if manifest else LayerResult()
    if not env_file and env_key in files.values and files.values[env_key][0]:
        loaded = _read_env_file(str(files.values[env_key][0]), env, problems, inputs)

    secrets_dir = parsed.meta.secrets_dir or env.get("PALFREY_SECRETS_DIR")
    secrets = secrets_layer(Path(secrets_dir)) if secrets_dir else LayerResult()
    environment = env_layer(env, loaded_from=loaded)
    layers = [platform_env_layer(env), files, secrets, environment, api, parsed.layer]

    merged: Layer = {}
    for layer in layers:
        merged.update(layer.values)
        if layer is not api and layer is not parsed.layer:
            problems.extend(layer.problems)
    config, found = _validate(merged)
    problems = sorted(problems + found, key=_by_source)
    warnings = tuple(_advice(config, env))
    if problems or config is None:
        raise ConfigError(problems, warnings)
    return Resolved(
        config=config,
        origins={path: merged.get(path, (None, DEFAULT))[1] for path in by_path()},
        meta=parsed.meta,
        warnings=warnings,
        config_file=Path(manifest) if manifest else None,
        inputs=(*files.inputs, *inputs, *secrets.inputs),
    )


def load_config(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Config:
    """The validated Config exactly as the `palfrey` command would build it.

    >>> load_config(["main:app", "--port", "9000"]).server.port
    9000
    """
    return resolve(argv, environ=environ, overrides=overrides, config_file=config_file).config
