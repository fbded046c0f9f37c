"""Counting into a block: per request, per refusal, per WebSocket session, and the gauges
sampled once a second (connections, streams, sessions, event-loop lag).

`Recorder.request` runs for every completed request, so it is a closure over local
names: a dict lookup for the slot of (protocol, method), a status-class offset, a bisect
for the histogram bucket, and five in-place float additions (see
docs/explanation/observability.md for what it costs).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from palfrey.metrics.block import Block
from palfrey.metrics.layout import (
    HTTP_VERSIONS,
    METHODS,
    RELOADS,
    RESTARTS,
    WEBSOCKET,
    refusal,
)

__all__ = ["SAMPLE_INTERVAL", "Recorder", "count_reload", "count_restart", "count_spawn"]

SAMPLE_INTERVAL = 1.0
"""Seconds between two samples of the gauges (and two event-loop lag measurements)."""

_monotonic = time.monotonic


class Recorder:
    """Counts one serving process's traffic into `block`."""

    def __init__(self, block: Block) -> None:
        self.block = block
        layout = block.layout
        values = block.values
        # http_version -> method -> (requests slot, histogram, request bytes, response bytes)
        slots: dict[str, dict[str, tuple[int, int, int, int]]] = {}
        for version, protocol in HTTP_VERSIONS.items():
            slots[version] = {
                method: (
                    layout.request_slot(protocol, index),
                    layout.histogram + protocol * layout.stride,
                    layout.request_bytes + protocol,
                    layout.response_bytes + protocol,
                )
                for index, method in enumerate(METHODS)
            }
        bounds = layout.buckets
        sum_offset = len(bounds) + 1

        def request(cycle: Any, now: float | None = None) -> None:
            """Count a completed request; `now` (time.monotonic()) when the caller has it."""
            duration = (_monotonic() if now is None else now) - cycle.start_time
            scope = cycle.scope
            by_method = slots.get(scope["http_version"]) or slots["1.1"]
            slot = by_method.get(scope["method"])
            if slot is None:  # any other method counts as "other": bounded label values
                slot = by_method["other"]
            counts, histogram, received, sent = slot
            status = cycle.status // 100
            values[counts + (status if 0 < status < 6 else 0)] += 1.0
            values[histogram + bisect_left(bounds, duration)] += 1.0
            values[histogram + sum_offset] += duration
            values[received] += cycle.body_received
            values[sent] += cycle.bytes_sent

        self.request = request

    def refused(self, status: int) -> None:
        """The server answered a request itself (a limit, a timeout, a malformed request)."""
        self.block.values[self.block.layout.refused + refusal(status)] += 1.0

    def websocket(self, exchange: Any, kind: str) -> None:
        """A WebSocket handshake was answered, or a session closed."""
        layout, values = self.block.layout, self.block.values
        if kind == "close":
            values[layout.ws_messages] += exchange.messages_in
            values[layout.ws_messages + 1] += exchange.messages_out
            values[layout.ws_bytes] += exchange.bytes_in
            values[layout.ws_bytes + 1] += exchange.bytes_out
            return
        method = exchange.scope.get("method", "GET")
        index = METHODS.index(method) if method in METHODS else METHODS.index("other")
        status = exchange.status // 100
        values[layout.request_slot(WEBSOCKET, index) + (status if 0 < status < 6 else 0)] += 1.0
        values[layout.response_bytes + WEBSOCKET] += exchange.bytes_sent

    # -- gauges ------------------------------------------------------------------------

    async def sample(self, connections: Callable[[], Iterable[Any]]) -> None:
        """Every SAMPLE_INTERVAL: the open connections, HTTP/2 streams and WebSocket
        sessions among `connections()`, and how late the loop woke this task (its lag)."""
        layout, values = self.block.layout, self.block.values
        lag = layout.gauge("loop_lag")
        self.sample_connections(connections())
        while True:
            started = _monotonic()
            await asyncio.sleep(SAMPLE_INTERVAL)
            # On the monotonic clock: uvloop's loop.time() is cached per loop iteration
            # with millisecond resolution.
            values[lag] = max(0.0, _monotonic() - started - SAMPLE_INTERVAL)
            self.sample_connections(connections())

    def sample_connections(self, connections: Iterable[Any]) -> None:
        layout, values = self.block.layout, self.block.values
        open_, streams, sessions = 0, 0, 0
        for conn in connections:
            open_ += 1
            found = getattr(conn, "streams", None)
            if isinstance(found, dict):  # an HTTP/2 connection: its open streams
                streams += len(found)
                sessions += sum(1 for stream in found.values() if getattr(stream, "ws", None))
            elif getattr(conn, "session", None) is not None:  # an upgraded WebSocket
                sessions += 1
        values[layout.gauge("connections")] = open_
        values[layout.gauge("http2_streams")] = streams
        values[layout.gauge("websocket_sessions")] = sessions


def count_restart(block: Block, reason: str) -> None:
    block.values[block.layout.restarts + RESTARTS.index(reason)] += 1.0


def count_spawn(block: Block) -> None:
    block.values[block.layout.spawned] += 1.0


def count_reload(block: Block, outcome: str) -> None:
    block.values[block.layout.reloads + RELOADS.index(outcome)] += 1.0
