"""Running a Config: the CLI's serve path and the `palfrey.run()` Python API.

This is where validation ends: the Config is checked for backends that are not
installed, copied into its pydantic-free runtime form, and handed to
palfrey.workers.launch. `workers.count = 1` serves in one process (palfrey.workers.single:
SIGHUP re-executes in place, keeping the listeners); `workers.count > 1` and
`reload.enabled` run the supervisor (palfrey.workers.supervisor), which spawns the worker
processes. From the `palfrey` command, a single process first re-executes itself so
that the process which serves never imports pydantic (see palfrey.workers.launch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from palfrey.build.check import missing_backends
from palfrey.config.loader import ConfigError, resolve
from palfrey.config.model import Config, to_runtime
from palfrey.exitcodes import EXIT_CONFIG, fail
from palfrey.workers.launch import Launch, Reresolver, can_exec, export_env_file, reexec, serve


def _reresolver(
    argv: Sequence[str] | None, overrides: Mapping[str, Any] | None
) -> Reresolver | None:
    """What SIGHUP runs: every layer again, with the original argv (or palfrey.run()
    keywords) and the environment as it is now."""
    if argv is None and overrides is None:
        return None
    return Reresolver(tuple(argv or ()), dict(overrides or {}) or None)


def _manifest(argv: Sequence[str] | None) -> Path | None:
    if argv is None:
        return None
    from palfrey.config.arguments import parse_args

    named = parse_args(list(argv)).meta.config or os.environ.get("PALFREY_CONFIG")
    return Path(named) if named else None


def run_config(
    config: Config,
    app: Any | None = None,
    *,
    argv: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    exec_to_serve: bool = False,
) -> int:
    """Serve `config` until a signal stops it; return the exit code.

    `argv` (the command line) or `overrides` (palfrey.run() keywords) let SIGHUP and
    `server.reload_on_change` re-read the configuration; without them a reload restarts
    with the same Config. `exec_to_serve` (the `palfrey` command) replaces this process
    with one that serves without pydantic, when it serves alone and can re-execute.

    0: stopped cleanly; 1: the app cannot be imported, a listener cannot be bound, or
    workers crash-looped; 2: a configuration problem found at startup; 3: lifespan
    startup failed.
    """
    runtime = to_runtime(config)
    problems = missing_backends(runtime)
    if problems:
        return fail(ConfigError(problems).render(), EXIT_CONFIG)
    reresolve = _reresolver(argv, overrides)
    manifest = _manifest(argv)
    alone = runtime.workers.count == 1 and not runtime.reload.enabled
    if exec_to_serve and alone and app is None and can_exec():
        reexec(Launch(runtime, reresolve, manifest))
    # Imported here: a process that re-executes above never configures logging itself.
    from palfrey.logging import configure_logging

    export_env_file(runtime)
    configure_logging(runtime.logging)
    return serve(runtime, app, reresolve=reresolve, manifest=manifest)


def run(
    app: Any = None,
    *,
    config: Config | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> None:
    """Serve an app like `uvicorn.run()`: keywords take uvicorn's names (`host`, `port`,
    `workers`, `ssl_certfile`, ...) or whole sections (`tls={"certfile": ...}`).

    `app` is an import string or the ASGI app itself. Settings are layered exactly as for
    the CLI, with these keywords at the top: PALFREY_* variables (from `environ`, default
    os.environ) still apply beneath them. Pass `config=` to skip layering altogether.
    Exits the process (SystemExit) with a non-zero code when serving fails.
    """
    overrides: dict[str, Any] | None = None
    if config is None:
        if isinstance(app, str):
            options["app"] = app
        config = resolve([], environ=environ, overrides=options).config
        overrides = options
    code = run_config(config, None if isinstance(app, str) else app, overrides=overrides)
    if code:
        raise SystemExit(code)
