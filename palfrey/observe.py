"""What the protocols report to the access log and metrics, in one object.

Built by the server only when one of them is on: with both off the protocols hold None
and pay one attribute check per request. `request` is the hot path, so it is the
component's own function when only one is on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_monotonic = time.monotonic

__all__ = ["Observers"]


class Observers:
    """The access log (`access`, palfrey.accesslog.sink) and metrics (`metrics`,
    palfrey.metrics.recorder), either of which may be None (not both)."""

    def __init__(self, access: Any | None, metrics: Any | None) -> None:
        self.access = access
        self.metrics = metrics
        if access is not None and metrics is not None:
            count, write = metrics.request, access.request

            def request(cycle: Any) -> None:
                now = _monotonic()  # one clock read for both
                count(cycle, now)
                write(cycle, now)

            self.request: Callable[[Any], None] = request
        else:
            only = access if access is not None else metrics
            assert only is not None
            self.request = only.request

    def websocket(self, exchange: Any, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.websocket(exchange, kind)
        if self.access is not None:
            self.access.websocket(exchange, kind)

    def refused(self, status: int) -> None:
        if self.metrics is not None:
            self.metrics.refused(status)

    def flush(self) -> None:
        if self.access is not None:
            self.access.flush()
