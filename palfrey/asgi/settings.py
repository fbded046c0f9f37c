"""The settings objects the ASGI glue reads, filled by the plan from the config model.

Like palfrey.protocols.settings: no defaults of their own, nothing heavier than
`dataclasses` imported, picklable (they travel inside the Plan).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIVENESS", "DEFAULT_READINESS", "AppSpec", "HealthPaths", "LifespanSettings"]


@dataclass(frozen=True)
class AppSpec:
    """Which app to serve and how to call it (filled from the config by the plan)."""

    #: "module:attribute" (attributes may be dotted); None when the app object is given.
    target: str | None
    factory: bool
    #: Put first on sys.path before importing; "" is the current directory.
    app_dir: str
    interface: str  # "auto", "asgi3", "asgi2" or "wsgi"


@dataclass(frozen=True)
class LifespanSettings:
    """The `lifespan` section (filled by the plan)."""

    mode: str  # "auto", "on" or "off"
    startup_timeout: float | None
    shutdown_timeout: float | None


DEFAULT_LIVENESS = "/healthz"
DEFAULT_READINESS = "/readyz"


@dataclass(frozen=True)
class HealthPaths:
    """The `health` section's paths (filled by the plan); None: not answered in front of
    the app."""

    liveness: str | None
    readiness: str | None

    def for_listener(self) -> tuple[str, str]:
        """The paths a separate health listener answers (defaults when unset)."""
        return self.liveness or DEFAULT_LIVENESS, self.readiness or DEFAULT_READINESS
