"""The layers a Config is merged from, each a flat map of option path -> (value, origin).

Layers, lowest to highest: defaults < platform env defaults (WEB_CONCURRENCY,
FORWARDED_ALLOW_IPS) < manifest file < secrets directory < PALFREY_* environment < CLI
flags (or palfrey.run() keywords). Each source reports unknown keys as problems that name
the source and the closest valid key; nothing is ignored silently.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml

from palfrey.config.inputs import Input, read_input
from palfrey.config.model import SECTIONS
from palfrey.config.registry import ENV_PREFIX, Option, by_flat_env, by_path, by_uvicorn_param

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Origin:
    """Where a value came from: "default", "file", "env", "cli" or "api"."""

    kind: str
    source: str = ""
    line: int | None = None

    def __str__(self) -> str:
        if self.kind == "default":
            return "default"
        if self.kind == "file":
            return f"{self.source}:{self.line}" if self.line else self.source
        return self.source


DEFAULT = Origin("default")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, with where it came from."""

    message: str
    origin: Origin | None = None

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}" if self.origin else self.message


Layer = dict[tuple[str, ...], tuple[Any, Origin]]


@dataclass
class LayerResult:
    """A parsed layer plus the problems found while reading it."""

    values: Layer = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: The files read, with a digest of their bytes (palfrey.plan.cache checks them).
    inputs: list[Input] = field(default_factory=list)


# -- suggestions ----------------------------------------------------------------------------


def _all_keys() -> list[str]:
    return [".".join(path) for path in by_path()]


def suggest(key: str, candidates: Iterable[str] | None = None) -> str:
    """ " Did you mean 'x'?" for the closest valid key, or a pointer to uvicorn's home."""
    leaf = key.rsplit(".", 1)[-1]
    uv = by_uvicorn_param().get(leaf)
    if uv is not None and uv.key != key:
        return f" Did you mean '{uv.key}'? (uvicorn's {uv.cli_flag or 'APP'} lives there)"
    pool = list(candidates) if candidates is not None else _all_keys()
    match = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
    if not match:
        ends = [k for k in _all_keys() if k.endswith("." + leaf)]
        match = ends[:1]
    if not match:
        match = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


# -- value coercion shared by text sources (env, CLI, secrets) ---------------------------------

_NONE_WORDS = frozenset({"none", "null"})
_HEADER_SPLIT = re.compile(r",\s*(?=[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*:)")


def from_text(option: Option, text: str) -> Any:
    """Interpret a string from env, a flag or a secret file for this option.

    Lists take a JSON array or comma-separated items (header values may contain commas:
    a split happens only before "Name:"); tables take JSON; an optional option takes
    "none"/"null" as unset. Everything else is handed to pydantic, which validates it.
    """
    stripped = text.strip()
    if option.optional and stripped.lower() in _NONE_WORDS:
        return None
    if option.kind == "list":
        if stripped.startswith("["):
            return json.loads(stripped)
        if not stripped:
            return []
        pattern = _HEADER_SPLIT if option.path == ("server", "headers") else re.compile(r",")
        return [item.strip() for item in pattern.split(stripped) if item.strip()]
    if option.kind == "dict":
        return json.loads(stripped)
    return text


# -- nested mappings (files, section JSON, palfrey.run() dicts) ------------------------------


def flatten(
    data: Mapping[str, Any],
    origin_for: Any,
    result: LayerResult,
    prefix: tuple[str, ...] = (),
) -> None:
    """Walk a nested mapping against the model, recording leaves and unknown keys.

    `origin_for(path)` gives the Origin of a leaf (so files can attach line numbers).
    """
    for key, value in data.items():
        path = (*prefix, str(key))
        if not prefix and key == "$schema":
            continue  # the editor directive in JSON manifests
        if not prefix and key in SECTIONS:
            if not isinstance(value, Mapping):
                result.problems.append(_not_a_table(key, value, origin_for(path)))
                continue
            flatten(value, origin_for, result, path)
            continue
        option = by_path().get(path)
        if option is None:
            result.problems.append(_unknown(path, value, origin_for(path)))
            continue
        result.values[path] = (value, origin_for(path))


def _not_a_table(section: str, value: Any, origin: Origin) -> Problem:
    message = f"'{section}' is a section: it must be a table of settings, got {value!r}."
    option = by_uvicorn_param().get(section)
    if option is not None:  # `workers = 4`, `http = "h11"`: uvicorn's flat habit
        message += f" Did you mean '{option.key} = {json.dumps(value)}'?"
    return Problem(message, origin)


def _unknown(path: tuple[str, ...], value: Any, origin: Origin) -> Problem:
    key = ".".join(path)
    if len(path) == 1 and isinstance(value, Mapping):
        return Problem(f"unknown section '{key}'.{suggest(key, list(SECTIONS))}", origin)
    prefix = path[:-1]
    if prefix:
        pool = [".".join(p) for p in by_path() if p[: len(prefix)] == prefix]
    else:
        pool = [*SECTIONS, *(".".join(p) for p in by_path() if len(p) == 1)]
    return Problem(f"unknown key '{key}'.{suggest(key, pool)}", origin)


# -- manifest files ---------------------------------------------------------------------------


class ManifestError(Exception):
    """A manifest that cannot be read or parsed at all."""


def _toml_lines(text: str, table_prefix: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    """Best-effort line numbers for TOML keys (tomllib does not report positions)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] | None = () if not table_prefix else None
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\- \"]+?)\s*\]\s*(#.*)?$")
    assign = re.compile(r"^\s*([A-Za-z0-9_.\-\"$]+)\s*=")
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.lstrip().startswith("[["):
            table = None
            continue
        found = header.match(raw)
        if found:
            parts = tuple(p.strip().strip('"') for p in found.group(1).split("."))
            n = len(table_prefix)
            table = parts[n:] if parts[:n] == table_prefix else None
            if table is not None and table:
                lines.setdefault(table, number)
            continue
        found = assign.match(raw)
        if found and table is not None:
            key = tuple(p.strip('"') for p in found.group(1).split("."))
            if not table and key[: len(table_prefix)] == table_prefix:
                key = key[len(table_prefix) :]
            lines.setdefault((*table, *key), number)
    return lines


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = (*prefix, str(key_node.value))
                lines[path] = key_node.start_mark.line + 1
                if len(path) < 2:
                    walk(value_node, path)

    import yaml  # only for YAML manifests: PyYAML costs about 1 MiB of RSS

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


def _read_yaml(text: str, path: Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    import yaml  # imported only when a YAML manifest is read

    try:
        data = yaml.safe_load(text)
        return ({} if data is None else data), _yaml_lines(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: invalid YAML: {exc}") from None


def read_manifest(
    path: Path, inputs: list[Input] | None = None
) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Parse a manifest into (data, line numbers by key path); the file read is added to
    `inputs`."""
    try:
        text = read_input(path, [] if inputs is None else inputs)
    except FileNotFoundError:
        raise ManifestError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ManifestError(f"cannot read config file {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
            prefix: tuple[str, ...] = ()
            if path.name == "pyproject.toml":
                prefix = ("tool", "palfrey")
                data = data.get("tool", {}).get("palfrey")
                if data is None:
                    raise ManifestError(f"{path} has no [tool.palfrey] table")
            return data, _toml_lines(text, prefix)
        if suffix in (".yaml", ".yml"):
            data, lines = _read_yaml(text, path)
        elif suffix == ".json":
            data, lines = json.loads(text), {}
        else:
            raise ManifestError(
                f"{path}: unknown manifest format '{suffix}'; use .toml, .yaml, .yml or .json"
            )
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: invalid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: the manifest must be a table/mapping of settings")
    return data, lines


def file_layer(path: Path) -> LayerResult:
    result = LayerResult()
    try:
        data, lines = read_manifest(path, result.inputs)
    except ManifestError as exc:
        result.problems.append(Problem(str(exc)))
        return result
    name = str(path)

    def origin_for(key: tuple[str, ...]) -> Origin:
        return Origin("file", name, lines.get(key) or lines.get(key[:1]))

    flatten(data, origin_for, result)
    return result


# -- environment ------------------------------------------------------------------------------

META_ENV = frozenset({"PALFREY_CONFIG", "PALFREY_SECRETS_DIR"})
"""PALFREY_ variables that choose sources rather than set options."""

HTTP_VERSION_SWITCHES = {"h2": ("http2", "enabled"), "h3": ("http3", "enabled")}
"""uvicorn-style `--http h2` / `PALFREY_HTTP=h3` turn a version on beside HTTP/1.1."""


def put_text(option: Option, text: str, origin: Origin, result: LayerResult) -> None:
    """Record a text value (env, flag, secret file) for an option, reporting bad JSON."""
    path = option.path
    if option.path == ("http", "backend") and text.strip().lower() in HTTP_VERSION_SWITCHES:
        path, value = HTTP_VERSION_SWITCHES[text.strip().lower()], True
    else:
        try:
            value = from_text(option, text)
        except json.JSONDecodeError as exc:
            result.problems.append(Problem(f"'{option.key}': invalid JSON: {exc.msg}", origin))
            return
    previous = result.values.get(path)
    if previous is not None and previous[0] != value and previous[1].kind == origin.kind:
        result.problems.append(
            Problem(
                f"'{option.key}' is also set by {previous[1]} to a different value; remove one",
                origin,
            )
        )
        return
    result.values[path] = (value, origin)


def env_layer(
    environ: Mapping[str, str], loaded_from: Mapping[str, str] | None = None
) -> LayerResult:
    """PALFREY_* variables: nested PALFREY_SECTION__KEY names and uvicorn's flat names.

    A flat name can equal a section name (PALFREY_HTTP=httptools, PALFREY_WORKERS=4,
    PALFREY_LIFESPAN=on, PALFREY_RELOAD=true): a scalar there is the uvicorn option; only
    a JSON object sets the whole section.
    """
    result = LayerResult()
    # Flat names first so nested names (more specific) are compared against them.
    names = sorted((n for n in environ if n.startswith(ENV_PREFIX)), key=lambda n: "__" in n)
    for name in names:
        text = environ[name]
        source = (
            f"{name} (from {loaded_from[name]})" if loaded_from and name in loaded_from else name
        )
        origin = Origin("env", source)
        if name in META_ENV:
            continue
        rest = name[len(ENV_PREFIX) :]
        section = rest.lower()
        if section in SECTIONS and text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                result.problems.append(
                    Problem(f"invalid JSON for section '{section}': {exc.msg}", origin)
                )
                continue
            flatten({section: data}, lambda _p, o=origin: o, result)
            continue
        if "__" in rest:
            path = tuple(part.lower() for part in rest.split("__"))
            option = by_path().get(path)
            if option is None:
                key = ".".join(path)
                hint = suggest(key)
                if hint:
                    target = by_path()[tuple(hint.split("'")[1].split("."))]
                    hint = f" Did you mean {target.nested_env}?"
                result.problems.append(Problem(f"unknown setting '{key}'.{hint}", origin))
                continue
            put_text(option, text, origin, result)
            continue
        option = by_flat_env().get(name)
        if option is not None:
            put_text(option, text, origin, result)
        # Other PALFREY_ names are not ours to judge (SPEC §1 errors on nested names
        # only); loader.resolve() reports them as warnings.
    return result


def unknown_flat_env(environ: Mapping[str, str]) -> list[str]:
    """Flat PALFREY_ names that set nothing, with a hint (reported as warnings)."""
    notes = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" in name or name in META_ENV:
            continue
        if name in by_flat_env() or name[len(ENV_PREFIX) :].lower() in SECTIONS:
            continue
        match = difflib.get_close_matches(name, list(by_flat_env()), n=1, cutoff=0.75)
        hint = f" Did you mean {match[0]}?" if match else ""
        notes.append(f"{name} is not a Palfrey setting and is ignored.{hint}")
    return notes


def platform_env_layer(environ: Mapping[str, str]) -> LayerResult:
    """WEB_CONCURRENCY and FORWARDED_ALLOW_IPS set defaults, as uvicorn reads them."""
    result = LayerResult()
    platform = {
        "WEB_CONCURRENCY": ("workers", "count"),
        "FORWARDED_ALLOW_IPS": ("proxy", "forwarded_allow_ips"),
    }
    for name, path in platform.items():
        if name in environ:
            put_text(by_path()[path], environ[name], Origin("env", name), result)
    return result


def secrets_layer(directory: Path) -> LayerResult:
    """A directory of one-value files (a mounted Kubernetes Secret, Docker secrets).

    A file named like an option's env name (PALFREY_TLS__KEYFILE_PASSWORD, any case) or
    its dotted key (tls.keyfile_password) sets that option; other files are ignored
    because a mounted Secret often holds unrelated keys (tls.crt, tls.key).
    """
    result = LayerResult()
    # Secret values are never written to the plan cache: a start-up reading them validates.
    result.inputs.append(Input(str(directory), None))
    if not directory.is_dir():
        result.problems.append(Problem(f"secrets directory not found: {directory}"))
        return result
    names: dict[str, Option] = {}
    for option in by_path().values():
        names[option.nested_env.lower()] = option
        names[option.key.lower()] = option
    for entry in sorted(directory.iterdir()):
        found = names.get(entry.name.lower())
        if found is not None and entry.is_file():
            text = entry.read_text(encoding="utf-8").rstrip("\r\n")
            put_text(found, text, Origin("secret", str(entry)), result)
    return result


def mapping_layer(data: Mapping[str, Any], source: str) -> LayerResult:
    """palfrey.run(**options): uvicorn keyword names or nested section dicts."""
    result = LayerResult()
    nested: dict[str, Any] = {}
    for key, value in data.items():
        option = by_uvicorn_param().get(key)
        origin = Origin("api", f"{source}({key}=...)")
        # workers=4 / http="h2" are uvicorn's keywords; workers={...} is the section.
        if option is None or (key in SECTIONS and isinstance(value, Mapping)):
            nested[key] = value
        elif option.path == ("http", "backend") and str(value).lower() in HTTP_VERSION_SWITCHES:
            result.values[HTTP_VERSION_SWITCHES[str(value).lower()]] = (True, origin)
        else:
            result.values[option.path] = (value, origin)
    flatten(nested, lambda path: Origin("api", f"{source}({path[0]}=...)"), result)
    return result
