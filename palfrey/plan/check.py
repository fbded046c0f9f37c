"""`palfrey --check-config`: everything that can fail at startup, checked without binding.

Files exist and parse, the TLS context loads with its key and password, the named
backends are installed, the plan can be made, and the app imports. Every problem is
collected, none raised, and every check runs whose inputs are there: a missing TLS file
does not hide an app that cannot be imported.

`missing_backends()` also runs before every start and reload, so PyYAML and the TLS
module are imported only by the checks that need them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from palfrey.config.model import Config
from palfrey.config.sources import Origin, Problem
from palfrey.plan.plan import Plan, PlanError, plan
from palfrey.plan.registry import (
    HTTP1,
    HTTP2,
    HTTP3,
    LOOPS,
    WEBSOCKETS,
    Backend,
    installed,
    websocket_backend,
)

Origins = Mapping[tuple[str, ...], Origin]


def _files(config: Config) -> list[tuple[str, Path]]:
    candidates = {
        "tls.certfile": config.tls.certfile,
        "tls.keyfile": config.tls.keyfile,
        "tls.ca_certs": config.tls.ca_certs,
        "tls.keyfile_password_file": config.tls.keyfile_password_file,
        "logging.config": config.logging.config,
        "env_file": config.env_file,
    }
    return [(key, path) for key, path in candidates.items() if path is not None]


def _missing_files(config: Config, origins: Origins) -> list[Problem]:
    return [
        Problem(f"'{key}': file not found: {path}", _origin(origins, key))
        for key, path in _files(config)
        if not path.is_file()
    ]


def _origin(origins: Origins, key: str) -> Origin | None:
    origin = origins.get(tuple(key.split(".")))
    return origin if origin is not None and origin.kind != "default" else None


def _log_config_problem(path: Path) -> Problem | None:
    """Parse a --log-config file the way configure_logging will read it."""
    import configparser
    import json

    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            yaml.safe_load(text)
        else:
            configparser.ConfigParser().read_string(text)
    except (ValueError, yaml.YAMLError, configparser.Error) as exc:
        return Problem(f"'logging.config': {path} cannot be parsed: {exc}")
    return None


def _directories(config: Config) -> list[Problem]:
    problems = []
    uds = config.server.uds
    if uds is not None and not uds.parent.is_dir():
        problems.append(Problem(f"'server.uds': directory does not exist: {uds.parent}"))
    for directory in config.reload.dirs:
        if config.reload.enabled and not Path(directory).is_dir():
            problems.append(Problem(f"'reload.dirs': directory does not exist: {directory}"))
    if config.app_dir and not Path(config.app_dir).is_dir():
        problems.append(Problem(f"'app_dir': directory does not exist: {config.app_dir}"))
    return problems


def check(
    config: Config,
    origins: Origins | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    manifest: Path | None = None,
) -> tuple[Plan | None, list[Problem]]:
    """The plan that would run and every startup problem of this config, without binding
    a socket. Each check runs unless a problem already found makes its verdict a repeat
    (a TLS context is not loaded from a file that does not exist)."""
    origins = origins or {}
    missing = _missing_files(config, origins)
    absent = {key for key, path in _files(config) if not path.is_file()}
    problems = [*missing, *_directories(config), *missing_backends(config)]
    the_plan: Plan | None = None
    try:
        the_plan = plan(config, environ, manifest=manifest)
    except PlanError as exc:
        problems.extend(plan_problems(exc, origins))
    if config.logging.config is not None and "logging.config" not in absent:
        problem = _log_config_problem(config.logging.config)
        if problem:
            problems.append(problem)
    if the_plan is not None and the_plan.tls is not None and not absent & _TLS_FILES:
        from palfrey.plan.tls import TLSConfigError, create_ssl_context

        try:
            create_ssl_context(the_plan.tls)
        except TLSConfigError as exc:
            problems.append(Problem(str(exc)))
    if config.app is None:
        problems.append(Problem("no app given: pass APP, or set 'app' or PALFREY_APP"))
    elif not (config.app_dir and not Path(config.app_dir).is_dir()):
        problems.extend(_app_problems(config))
    return the_plan, problems


_TLS_FILES = frozenset(("tls.certfile", "tls.keyfile", "tls.ca_certs", "tls.keyfile_password_file"))


def plan_problems(exc: PlanError, origins: Origins) -> list[Problem]:
    problems = []
    for keys, message in exc.problems:
        sources = [
            f"{key} from {origin}" for key in keys if (origin := _origin(origins, key)) is not None
        ]
        where = f" ({'; '.join(sources)})" if sources else ""
        problems.append(Problem(f"{message}{where}"))
    return problems


def _app_problems(config: Config) -> list[Problem]:
    from palfrey.asgi.app_loading import AppLoadError, load_app
    from palfrey.asgi.settings import AppSpec

    spec = AppSpec(config.app, config.factory, config.app_dir, config.interface)
    try:
        load_app(spec)
    except AppLoadError as exc:
        return [Problem(f"'app': {exc}")]
    return []


def _hint(backend: Backend, what: str, key: str) -> Problem:
    command = f"pip install 'palfrey[{backend.extra}]'" if backend.extra else "pip install palfrey"
    if backend.extra == "websockets":
        command = "pip install websockets"
    return Problem(f"'{key}': {what} needs the '{backend.module}' package: {command}")


def missing_backends(config: Config) -> list[Problem]:
    """Every backend the config names explicitly that is not installed."""
    problems = []
    if config.http.backend == "httptools" and not installed("httptools"):
        problems.append(_hint(HTTP1["httptools"], "the httptools parser", "http.backend"))
    if config.server.loop == "uvloop" and not installed("uvloop"):
        problems.append(_hint(LOOPS["uvloop"], "the uvloop event loop", "server.loop"))
    ws = websocket_backend(config.websocket.backend)
    if ws in WEBSOCKETS and not installed(WEBSOCKETS[ws].module):
        problems.append(_hint(WEBSOCKETS[ws], f"the {ws} WebSocket backend", "websocket.backend"))
    if config.http2.enabled and not installed(HTTP2.module):
        problems.append(_hint(HTTP2, "HTTP/2", "http2.enabled"))
    if config.http3.enabled and not installed(HTTP3.module):
        problems.append(_hint(HTTP3, "HTTP/3", "http3.enabled"))
    return problems
