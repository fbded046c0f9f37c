"""Serving a Plan: the `palfrey` command's serve path and the `palfrey.run()` Python API.

`workers.count = 1` serves in one process (palfrey.workers.single: SIGHUP re-executes in
place, keeping the listeners); `workers.count > 1` and `reload.enabled` run the
supervisor (palfrey.workers.supervisor), which spawns the worker processes. Every path
reaches `serve()` with a Plan; nothing below it reads the Config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from palfrey.exitcodes import EXIT_APP_IMPORT, EXIT_CONFIG, EXIT_LISTENER, fail

if TYPE_CHECKING:
    from palfrey.config.model import Config
    from palfrey.plan.plan import Plan
    from palfrey.plan.resolve import Reresolver
    from palfrey.workers.launch import Launch

__all__ = ["run", "serve", "serve_launch"]


def serve(
    plan: Plan,
    app: Any | None = None,
    *,
    reresolve: Reresolver | None = None,
    launched: bool = False,
) -> int:
    """Serve `plan` in this process, or supervise workers; return the exit code.

    `reresolve` lets SIGHUP and `server.reload_on_change` re-read the configuration;
    without it a reload restarts with the same plan. `launched`: this process image
    serves a handed-over Launch (the `palfrey` command), so a reload can re-execute
    straight into the new plan (see SingleProcess).

    0: stopped cleanly; 1: the app cannot be imported, a listener cannot be bound, or
    workers crash-looped; 2: a configuration problem found at startup; 3: lifespan
    startup failed.
    """
    from palfrey.asgi.app_loading import AppLoadError
    from palfrey.plan.listeners import ListenerError
    from palfrey.plan.tls import TLSConfigError

    try:
        if plan.process.supervised:
            if app is not None:
                return fail(
                    "workers.count > 1 and reload need the app as an import string "
                    '("module:attribute"), not an app object',
                    EXIT_CONFIG,
                )
            from palfrey.workers.supervisor import Supervisor

            return Supervisor(plan, reresolve=reresolve).run()
        from palfrey.workers.single import SingleProcess

        return SingleProcess(plan, app, reresolve=reresolve, launched=launched).run()
    except AppLoadError as exc:
        return fail(str(exc), EXIT_APP_IMPORT)
    except TLSConfigError as exc:
        return fail(str(exc), EXIT_CONFIG)
    except ListenerError as exc:
        return fail(str(exc), EXIT_LISTENER)


def serve_launch(
    launch: Launch, app: Any | None = None, *, launched: bool = True, note: str | None = None
) -> int:
    """Prepare this process for `launch` (env file, logging) and serve it; `note` (how the
    plan was obtained) goes to the debug log."""
    from palfrey.plan.realize import apply_logging, export_env_file

    export_env_file(launch.plan)
    apply_logging(launch.plan)
    if note is not None:
        import logging

        logging.getLogger("palfrey.error").debug("Configuration: %s", note)
    return serve(launch.plan, app, reresolve=launch.reresolve, launched=launched)


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
    from palfrey.config.loader import ConfigError, Resolved, resolve
    from palfrey.plan.resolve import Reresolver, plan_resolved
    from palfrey.workers.launch import Launch

    overrides: dict[str, Any] | None = None
    try:
        if config is None:
            if isinstance(app, str):
                options["app"] = app
            resolved = resolve([], environ=environ, overrides=options)
            overrides = options
        else:
            resolved = Resolved(config=config, origins={})
        plan = plan_resolved(resolved, environ)
    except ConfigError as exc:
        raise SystemExit(fail(exc.render(), EXIT_CONFIG)) from None
    launch = Launch(plan, Reresolver.of(None, overrides))
    code = serve_launch(launch, None if isinstance(app, str) else app, launched=False)
    if code:
        raise SystemExit(code)
