"""What the supervisor and its workers say to each other over their pipe, in one place.

Supervisor to worker: `Ping` (answered with `Pong` by the worker's event loop itself, so
a blocked loop fails the health check), `Stop` (finish in-flight requests and exit, for
rolling restarts: no drain delay) and `Drain` (a full shutdown, drain delay included;
SIGTERM and SIGINT mean the same). Worker to supervisor: `Ready` once serving, `Pong`,
and `Recycle` when limits.max_requests is reached, so the supervisor starts a
replacement before the worker stops.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Drain", "Message", "Ping", "Pong", "Ready", "Recycle", "Stop"]


@dataclass(frozen=True)
class Ping:
    """Supervisor -> worker: are you alive (is your event loop turning)?"""


@dataclass(frozen=True)
class Pong:
    """Worker -> supervisor: the answer to a Ping."""


@dataclass(frozen=True)
class Stop:
    """Supervisor -> worker: finish in-flight requests and exit (a rolling restart)."""


@dataclass(frozen=True)
class Drain:
    """Supervisor -> worker: shut down fully, drain delay included."""


@dataclass(frozen=True)
class Ready:
    """Worker -> supervisor: serving on the listeners."""

    pid: int


@dataclass(frozen=True)
class Recycle:
    """Worker -> supervisor: limits.max_requests reached after `requests` requests."""

    requests: int


Message = Ping | Pong | Stop | Drain | Ready | Recycle
