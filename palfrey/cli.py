"""The `palfrey` command: argv -> layers -> Config -> Plan -> an action. It declares no
option itself.

The validating front (`front`: the argument parser, the layers, pydantic, the plan)
runs in a forked child when this is the command (palfrey.workers.launch), so the process
that serves, the one the user started, never imports pydantic; called from Python
(`main(argv)`) it runs in the calling process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from palfrey._version import __version__
from palfrey.exitcodes import EXIT_CONFIG, EXIT_OK, fail
from palfrey.workers.launch import LAUNCH_ENV, Launch, can_fork, validate_in_child

if TYPE_CHECKING:
    from palfrey.config.arguments import Meta
    from palfrey.config.loader import Resolved
    from palfrey.plan.cache import PlanCache


def version_line() -> str:
    import platform  # only for --version

    return (
        f"Running palfrey {__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m palfrey`.

    Called with `argv`, it acts in this process; called as the command (argv None), the
    configuration is read in a forked child and this process serves the resulting plan.
    """
    from palfrey.main import serve_launch

    if argv is None and LAUNCH_ENV in os.environ:
        launch = _launched()
        if isinstance(launch, int):
            return launch
        if launch is not None:
            return serve_launch(launch)
    args = list(sys.argv[1:] if argv is None else argv)
    command = argv is None
    note = None
    if command and can_fork():
        import palfrey.plan.plan  # noqa: F401 - both processes need it: imported once, before

        outcome, note = _cached_or_validated(args)
    else:
        outcome = front(args)
    if isinstance(outcome, int):
        return outcome
    return serve_launch(outcome, launched=command, note=note)


def _cached_or_validated(args: list[str]) -> tuple[Launch | int, str]:
    """The Launch stored for exactly these inputs (palfrey.plan.cache), else the outcome of
    validating in a forked child, which stores a valid result for the next start; and a
    note on which it was, for the debug log."""
    from palfrey.plan.cache import PlanCache, serving_argv

    cache = PlanCache.for_command(args)
    if cache is None:
        return validate_in_child(lambda: front(args)), "plan cache: no cache directory"
    note = "not read by --check-config"
    if serving_argv(args) == tuple(args):
        found, warnings, note = cache.lookup()
        if isinstance(found, Launch):
            _warn(warnings)
            return found, f"plan cache: {note}; not validated again"
    outcome = validate_in_child(lambda: front(args, cache=cache), then=cache.flush)
    return outcome, f"plan cache: {note}; validated"


def _launched() -> Launch | int | None:
    """The Launch a reload handed over across exec; None when this version of Palfrey
    must validate the configuration again (it was upgraded in place)."""
    from palfrey.workers.launch import read_launch

    try:
        return read_launch(os.environ)
    except (OSError, ValueError) as exc:
        return fail(f"cannot read the configuration handed over by exec: {exc}", 1)


def front(args: Sequence[str], cache: PlanCache | None = None) -> Launch | int:
    """Parse `args` once, read every layer, validate and plan: the Launch to serve, or
    the exit code of a run that ends here (printing what it was asked to). A valid
    Launch is handed to `cache` for storing (`server.plan_cache`)."""
    from palfrey.config.arguments import parse_args
    from palfrey.config.loader import ConfigError, resolve

    parsed = parse_args(args)
    standalone = _standalone(parsed.meta)
    if standalone is not None:
        return standalone
    try:
        resolved = resolve(args, parsed=parsed)
    except ConfigError as exc:
        _warn(exc.warnings)
        return fail(exc.render(), EXIT_CONFIG)
    _warn(resolved.warnings)
    return _act(resolved, args, cache)


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


def _act(resolved: Resolved, args: Sequence[str], cache: PlanCache | None) -> Launch | int:
    from palfrey.config.loader import ConfigError
    from palfrey.plan.resolve import Reresolver, plan_resolved

    meta = resolved.meta
    if meta.print_config:
        from palfrey.config.render import to_toml

        origins = resolved.origins if meta.show_origins else None
        sys.stdout.write(to_toml(resolved.config, origins))
        return EXIT_OK
    if meta.show_origins:
        return fail("--show-origins goes with --print-config", EXIT_CONFIG)
    if meta.check_config:
        return _check(resolved, args, cache)
    if resolved.config.app is None:
        return fail(
            "no app given: pass an import string such as main:app, or set 'app' in the "
            "manifest or PALFREY_APP",
            EXIT_CONFIG,
        )
    try:
        plan = plan_resolved(resolved)
    except ConfigError as exc:
        return fail(exc.render(), EXIT_CONFIG)
    # argv travels along so SIGHUP can re-read every layer exactly as at startup.
    launch = Launch(plan, Reresolver(tuple(args)))
    _remember(cache, resolved, launch)
    return launch


def _remember(cache: PlanCache | None, resolved: Resolved, launch: Launch) -> None:
    if cache is not None and resolved.config.server.plan_cache:
        cache.remember(launch, resolved.inputs, resolved.warnings)


def _check(resolved: Resolved, args: Sequence[str], cache: PlanCache | None) -> int:
    """--check-config: the plan that `palfrey` would serve (made by the same function the
    server's start-up calls), or every problem at once. A valid plan is stored in the
    plan cache for the same command line without --check-config (an image build step
    warms the start of the container it builds)."""
    from palfrey.config.loader import ConfigError
    from palfrey.plan.cache import serving_argv
    from palfrey.plan.check import check
    from palfrey.plan.resolve import Reresolver

    plan, problems = check(resolved.config, resolved.origins, manifest=resolved.config_file)
    if problems or plan is None:
        return fail(ConfigError(problems).render(), EXIT_CONFIG)
    _remember(cache, resolved, Launch(plan, Reresolver(serving_argv(args))))
    source = f" ({resolved.config_file})" if resolved.config_file else ""
    print(f"palfrey: configuration OK{source}")
    print(f"palfrey: would serve {plan.summary()}")
    for line in plan.describe():
        print(f"  {line}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
