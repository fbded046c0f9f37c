"""From the command line, the environment and the manifest to a Plan: the validating front
of Palfrey, used at start-up and again on every reload.

This module imports the configuration machinery (pydantic) only inside its functions: a
serving process unpickles a `Reresolver` as part of what it was handed and must not load
pydantic until a reload actually happens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from palfrey.config.loader import Resolved
    from palfrey.plan.plan import Plan

__all__ = ["Reresolver", "ResolveError", "plan_resolved", "resolve_plan"]

logger = logging.getLogger("palfrey.error")


class ResolveError(Exception):
    """A configuration that cannot be served; `str()` is the whole report (every problem,
    with where each value came from)."""


def plan_resolved(resolved: Resolved, environ: Mapping[str, str] | None = None) -> Plan:
    """The Plan of a validated configuration. Raises ConfigError (listing every problem,
    with where each value came from) for backends that are not installed and settings
    Palfrey cannot serve: what `palfrey` reports at start-up and exits 2 for."""
    from palfrey.config.loader import ConfigError
    from palfrey.plan.check import missing_backends, plan_problems
    from palfrey.plan.plan import PlanError, plan

    problems = missing_backends(resolved.config)
    try:
        result = plan(resolved.config, environ, manifest=resolved.config_file)
    except PlanError as exc:
        problems.extend(plan_problems(exc, resolved.origins))
    if problems:
        raise ConfigError(problems, resolved.warnings)
    return result


def resolve_plan(
    argv: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Plan:
    """Read every layer and plan, as `palfrey ARGV` would; warnings go to the log. Raises
    ResolveError with the report `palfrey` prints at start-up."""
    from palfrey.config.loader import ConfigError, resolve

    try:
        resolved = resolve(list(argv), environ=environ, overrides=overrides)
        new = plan_resolved(resolved, environ)
    except ConfigError as exc:
        raise ResolveError(exc.render()) from None
    for warning in resolved.warnings:
        logger.warning("%s", warning)
    return new


@dataclass(frozen=True)
class Reresolver:
    """What a reload runs: every configuration layer again, from the original command line
    (`argv`) or palfrey.run() keywords (`overrides`), with the environment as it is now.

    Picklable (it travels with the Plan it was made with) and free of pydantic until
    called. Raises ResolveError for a configuration that `palfrey` would refuse at start-up.
    """

    argv: tuple[str, ...] = ()
    overrides: Mapping[str, Any] | None = None

    def __call__(self) -> Plan:
        from palfrey.plan.realize import operator_environ

        overrides = dict(self.overrides) if self.overrides else None
        return resolve_plan(self.argv, environ=operator_environ(), overrides=overrides)

    @classmethod
    def of(
        cls, argv: Sequence[str] | None, overrides: Mapping[str, Any] | None
    ) -> Reresolver | None:
        """The reresolver of a command line or palfrey.run() keywords; None when there is
        neither (a reload then restarts with the same plan)."""
        if argv is None and overrides is None:
            return None
        return cls(tuple(argv or ()), dict(overrides or {}) or None)
