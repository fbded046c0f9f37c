"""Running a Config: the CLI's serve path and the `palfrey.run()` Python API."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
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


def _export_env_file(config: Config) -> None:
    """The app sees the env file's variables too; ones already set win (as uvicorn)."""
    if config.env_file is None:
        return
    from dotenv import dotenv_values

    for name, value in dotenv_values(config.env_file).items():
        if value is not None:
            os.environ.setdefault(name, value)


def run_config(config: Config, app: Any | None = None) -> int:
    """Serve `config` in this process until a signal stops it; return the exit code.

    0: stopped cleanly; 1: the app cannot be imported or a listener cannot be bound;
    2: a configuration problem found at startup; 3: lifespan startup failed.
    """
    problems = missing_backends(config)
    if problems:
        return _fail(ConfigError(problems).render(), EXIT_CONFIG)
    if config.workers.count > 1 or config.reload.enabled:
        return _fail(
            "workers.count > 1 and reload need the process supervisor, which this build "
            "does not include yet; run one process per container, or use gunicorn",
            EXIT_CONFIG,
        )
    _export_env_file(config)
    configure_logging(config.logging)
    from palfrey.server import Server

    try:
        return Server(config, app).run()
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
    if config is None:
        if isinstance(app, str):
            options["app"] = app
        config = resolve([], environ=environ, overrides=options).config
    code = run_config(config, None if isinstance(app, str) else app)
    if code:
        raise SystemExit(code)
