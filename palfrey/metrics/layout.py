"""Where each metric lives in a block: label values, offsets and the block's size.

A block is a flat array of float64 slots. Counters are non-cumulative per label set
(histogram buckets included: cumulated when exposed); gauges are written by the process
that owns the block. The layout depends only on the histogram buckets, so two blocks with
the same buckets can be added slot by slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = [
    "CLASSES",
    "DIRECTIONS",
    "METHODS",
    "PROTOCOLS",
    "REFUSALS",
    "RELOADS",
    "RESTARTS",
    "Layout",
    "refusal",
]

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other")
"""Method label values: RFC 9110's methods and PATCH; any other token counts as "other"
(the label must not take values a client chooses: that is unbounded cardinality)."""

CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
PROTOCOLS = ("HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3", "WebSocket")
HTTP_VERSIONS = {"1.0": 0, "1.1": 1, "2": 2, "3": 3}
WEBSOCKET = 4
REFUSALS = ("concurrency", "body_size", "head_size", "header_timeout", "malformed")
RESTARTS = ("crash", "max_requests", "reload", "hung")
RELOADS = ("success", "failure", "unchanged")
DIRECTIONS = ("in", "out")
GAUGES = ("connections", "http2_streams", "http3_streams", "websocket_sessions", "loop_lag")

_REFUSAL_BY_STATUS = {503: 0, 413: 1, 414: 2, 431: 2, 408: 3}


def refusal(status: int) -> int:
    """The refusal reason index of a status the server answered a request with itself."""
    return _REFUSAL_BY_STATUS.get(status, 4)


@dataclass(frozen=True)
class Layout:
    """Offsets of every metric in a block with these histogram `buckets` (seconds)."""

    buckets: tuple[float, ...]
    requests: int = field(init=False)
    histogram: int = field(init=False)
    #: Slots per protocol in the histogram: one per bucket, +Inf, then the sum.
    stride: int = field(init=False)
    request_bytes: int = field(init=False)
    response_bytes: int = field(init=False)
    refused: int = field(init=False)
    ws_messages: int = field(init=False)
    ws_bytes: int = field(init=False)
    restarts: int = field(init=False)
    spawned: int = field(init=False)
    reloads: int = field(init=False)
    gauges: int = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        offset = 0

        def take(name: str, count: int) -> None:
            nonlocal offset
            object.__setattr__(self, name, offset)
            offset += count

        take("requests", len(PROTOCOLS) * len(METHODS) * len(CLASSES))
        object.__setattr__(self, "stride", len(self.buckets) + 2)
        take("histogram", len(HTTP_VERSIONS) * self.stride)
        take("request_bytes", len(PROTOCOLS))
        take("response_bytes", len(PROTOCOLS))
        take("refused", len(REFUSALS))
        take("ws_messages", len(DIRECTIONS))
        take("ws_bytes", len(DIRECTIONS))
        take("restarts", len(RESTARTS))
        take("spawned", 1)
        take("reloads", len(RELOADS))
        take("gauges", len(GAUGES))
        object.__setattr__(self, "size", offset)

    @property
    def counters(self) -> int:
        """Slots before this offset are counters (summed over every block ever used)."""
        return self.gauges

    def request_slot(self, protocol: int, method: int) -> int:
        """The slot of (protocol, method) for status class "other"; + class index."""
        return self.requests + (protocol * len(METHODS) + method) * len(CLASSES)

    def gauge(self, name: str) -> int:
        return self.gauges + GAUGES.index(name)

    @property
    def signature(self) -> int:
        """Identifies the layout (blocks with different signatures cannot be added)."""
        text = repr((1, self.buckets, PROTOCOLS, METHODS, CLASSES, REFUSALS, GAUGES))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
