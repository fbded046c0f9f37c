"""Running a Config: the CLI's serve path and the `palfrey.run()` Python API.

`workers.count = 1` serves in this process (palfrey.workers.single: SIGHUP re-executes
in place, keeping the listeners); `workers.count > 1` and `reload.enabled` run the
supervisor (palfrey.workers.supervisor), which spawns the worker processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from palfrey.asgi.app_loading import AppLoadError
from palfrey.build.listeners import ListenerError
from palfrey.build.registry import missing_backends
from palfrey.build.tls import TLSConfigError
from palfrey.config.loader import ConfigError, resolve
from palfrey.config.model import Config
from palfrey.logging import configure_logging

EXIT_APP_IMPORT = 1
EXIT_LISTENER = 1
EXIT_CONFIG = 2


def _fail(message: str, code: int) -> int:
    print(f"palfrey: {message}", file=sys.stderr)
    return code


def export_env_file(config: Config) -> None:
    """The app sees the env file's variables too; ones already set win (as uvicorn)."""
    if config.env_file is None:
        return
    from dotenv import dotenv_values

    for name, value in dotenv_values(config.env_file).items():
        if value is not None:
            os.environ.setdefault(name, value)


def _reresolver(
    argv: Sequence[str] | None, overrides: Mapping[str, Any] | None
) -> Callable[[], Config] | None:
    """What SIGHUP runs: every layer again, with the original argv (or palfrey.run()
    keywords) and the environment as it is now."""
    if argv is None and overrides is None:
        return None
    args, extra = list(argv or []), dict(overrides or {})

    def reresolve() -> Config:
        return resolve(args, environ=os.environ, overrides=extra or None).config

    return reresolve


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
) -> int:
    """Serve `config` until a signal stops it; return the exit code.

    `argv` (the command line) or `overrides` (palfrey.run() keywords) let SIGHUP and
    `server.reload_on_change` re-read the configuration; without them a reload restarts
    with the same Config.

    0: stopped cleanly; 1: the app cannot be imported, a listener cannot be bound, or
    workers crash-looped; 2: a configuration problem found at startup; 3: lifespan
    startup failed.
    """
    problems = missing_backends(config)
    if problems:
        return _fail(ConfigError(problems).render(), EXIT_CONFIG)
    export_env_file(config)
    configure_logging(config.logging)
    reresolve = _reresolver(argv, overrides)
    manifest = _manifest(argv)
    try:
        if config.workers.count > 1 or config.reload.enabled:
            if app is not None:
                return _fail(
                    "workers.count > 1 and reload need the app as an import string "
                    '("module:attribute"), not an app object',
                    EXIT_CONFIG,
                )
            from palfrey.workers.supervisor import Supervisor

            supervisor = Supervisor(
                config,
                reresolve=reresolve,
                manifest=manifest,
                dev_reload=config.reload.enabled,
            )
            return supervisor.run()
        from palfrey.workers.single import SingleProcess

        return SingleProcess(config, app, reresolve=reresolve, manifest=manifest).run()
    except AppLoadError as exc:
        return _fail(str(exc), EXIT_APP_IMPORT)
    except TLSConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except ListenerError as exc:
        return _fail(str(exc), EXIT_LISTENER)


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
