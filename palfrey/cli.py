"""The `palfrey` command: argv -> resolve() -> an action. It declares no option itself."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence

from palfrey._version import __version__
from palfrey.config.arguments import Meta, parse_args
from palfrey.config.loader import ConfigError, Resolved, resolve
from palfrey.config.render import to_toml
from palfrey.config.schema import schema_text

EXIT_OK = 0
EXIT_CONFIG = 2


def version_line() -> str:
    return (
        f"Running palfrey {__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()}"
    )


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    print(f"palfrey: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m palfrey`."""
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
    return _act(resolved, args)


def _warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"palfrey: warning: {warning}", file=sys.stderr)


def _standalone(meta: Meta) -> int | None:
    """--version and --print-schema need no config, so a broken one cannot stop them."""
    if meta.version:
        print(version_line())
        return EXIT_OK
    if meta.print_schema:
        sys.stdout.write(schema_text())
        return EXIT_OK
    return None


def _act(resolved: Resolved, args: Sequence[str] = ()) -> int:
    meta = resolved.meta
    if meta.print_config:
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
    return run_config(resolved.config, argv=list(args))


def _check(resolved: Resolved) -> int:
    from palfrey.build.check import check

    problems = check(resolved.config, resolved.origins)
    if problems:
        return _fail(ConfigError(problems).render())
    from palfrey.build.plan import plan

    source = f" ({resolved.config_file})" if resolved.config_file else ""
    print(f"palfrey: configuration OK{source}")
    print(f"palfrey: would serve {plan(resolved.config).summary()}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
