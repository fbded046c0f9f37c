"""The `palfrey` command: argv -> resolve() -> an action. It declares no option itself.

The configuration machinery (pydantic) is imported inside main(), not at the top: the
serving process image that `palfrey` re-executes into (palfrey.workers.launch) and the
workers that multiprocessing spawns both run this module again and must not load it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from palfrey._version import __version__
from palfrey.exitcodes import EXIT_CONFIG, EXIT_OK, fail
from palfrey.workers.launch import LAUNCH_ENV

if TYPE_CHECKING:
    from palfrey.config.arguments import Meta
    from palfrey.config.loader import Resolved


def version_line() -> str:
    import platform  # only for --version

    return (
        f"Running palfrey {__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()}"
    )


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    return fail(message, code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m palfrey`.

    Called with `argv`, it acts in this process; called as the command (argv None), a
    single serving process re-executes itself first (palfrey.workers.launch).
    """
    if argv is None and LAUNCH_ENV in os.environ:
        from palfrey.workers.launch import serve_launched

        code = serve_launched()
        if code is not None:
            return code
    from palfrey.config.arguments import parse_args
    from palfrey.config.loader import ConfigError, resolve

    args = list(sys.argv[1:] if argv is None else argv)
    standalone = _standalone(parse_args(args).meta)
    if standalone is not None:
        return standalone
    try:
        resolved = resolve(args)
    except ConfigError as exc:
        _warn(exc.warnings)
        return _fail(exc.render())
    _warn(resolved.warnings)
    return _act(resolved, args, exec_to_serve=argv is None)


def _warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"palfrey: warning: {warning}", file=sys.stderr)


def _standalone(meta: Meta) -> int | None:
    """--version and --print-schema need no config, so a broken one cannot stop them."""
    if meta.version:
        print(version_line())
        return EXIT_OK
    if meta.print_schema:
        from palfrey.config.schema import schema_text

        sys.stdout.write(schema_text())
        return EXIT_OK
    return None


def _act(resolved: Resolved, args: Sequence[str] = (), *, exec_to_serve: bool = False) -> int:
    meta = resolved.meta
    if meta.print_config:
        from palfrey.config.render import to_toml

        origins = resolved.origins if meta.show_origins else None
        sys.stdout.write(to_toml(resolved.config, origins))
        return EXIT_OK
    if meta.show_origins:
        return _fail("--show-origins goes with --print-config")
    if meta.check_config:
        return _check(resolved)
    if resolved.config.app is None:
        return _fail(
            "no app given: pass an import string such as main:app, or set 'app' in the "
            "manifest or PALFREY_APP"
        )
    from palfrey.main import run_config

    # argv travels along so SIGHUP can re-read every layer exactly as at startup.
    return run_config(resolved.config, argv=list(args), exec_to_serve=exec_to_serve)


def _check(resolved: Resolved) -> int:
    from palfrey.build.check import check
    from palfrey.build.plan import plan
    from palfrey.config.loader import ConfigError
    from palfrey.config.model import to_runtime

    config = to_runtime(resolved.config)
    problems = check(config, resolved.origins)
    if problems:
        return _fail(ConfigError(problems).render())
    source = f" ({resolved.config_file})" if resolved.config_file else ""
    print(f"palfrey: configuration OK{source}")
    print(f"palfrey: would serve {plan(config).summary()}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
