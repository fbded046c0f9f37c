"""The Prometheus exposition of a set of blocks, written by prometheus_client.

Counters are summed over every block (live serving processes, and the supervisor's
block, which holds retired workers' totals and its own counters); gauges over the live
ones; the event-loop lag is per process. prometheus_client's metric families and
encoders write the text (or OpenMetrics, when the scraper asks for it), so the format is
the reference implementation's, not Palfrey's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from palfrey.metrics.block import Block
from palfrey.metrics.layout import (
    CLASSES,
    DIRECTIONS,
    HTTP_VERSIONS,
    METHODS,
    PROTOCOLS,
    REFUSALS,
    RELOADS,
    RESTARTS,
    Layout,
)

__all__ = ["Scrape", "render"]


@dataclass
class Scrape:
    """What one scrape exposes."""

    layout: Layout
    live: Sequence[Block]
    #: Counters of retired processes and the supervisor's own (restarts, reloads).
    totals: Block | None = None
    #: Worker processes alive (None: a single process, no worker metrics).
    workers: int | None = None
    #: Labels of palfrey_config_info.
    info: dict[str, str] = field(default_factory=dict)
    #: Protocols served, for the stream gauge ("HTTP/2").
    stream_protocols: tuple[str, ...] = ("HTTP/2",)


def render(scrape: Scrape, accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) for a scrape; OpenMetrics when `accept` asks for it."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(scrape))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _Collector:
    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Any]:
        scrape = self.scrape
        layout = scrape.layout
        totals = _sum([*scrape.live, *([scrape.totals] if scrape.totals else [])], layout.counters)
        gauges = _sum(scrape.live, layout.size)
        yield from _requests(layout, totals)
        yield from _connections(layout, gauges, scrape)
        yield from _process(layout, totals, scrape)


def _sum(blocks: Sequence[Block], upto: int) -> list[float]:
    totals = [0.0] * upto
    for block in blocks:
        values = block.values.tolist()
        for index in range(upto):
            totals[index] += values[index]
    return totals


def _requests(layout: Layout, totals: list[float]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    requests = CounterMetricFamily(
        "palfrey_requests",
        "Requests answered (HTTP) and WebSocket handshakes, by method, status class and protocol.",
        labels=["method", "status_class", "protocol"],
    )
    for p, protocol in enumerate(PROTOCOLS):
        for m, method in enumerate(METHODS):
            base = layout.request_slot(p, m)
            for c, status_class in enumerate(CLASSES):
                if totals[base + c]:
                    requests.add_metric([method, status_class, protocol], totals[base + c])
    yield requests
    durations = HistogramMetricFamily(
        "palfrey_request_duration_seconds",
        "Time from a request's head to the end of its response.",
        labels=["protocol"],
    )
    for version, p in HTTP_VERSIONS.items():
        base = layout.histogram + p * layout.stride
        counts = totals[base : base + len(layout.buckets) + 1]
        if not any(counts):
            continue
        buckets, running = [], 0.0
        for bound, count in zip([*map(_bound, layout.buckets), "+Inf"], counts, strict=True):
            running += count
            buckets.append((bound, running))
        sum_value = totals[base + len(layout.buckets) + 1]
        durations.add_metric([f"HTTP/{version}"], buckets, sum_value)
    yield durations
    for name, offset, what in (
        ("palfrey_request_body_bytes", layout.request_bytes, "Request body bytes received"),
        ("palfrey_response_body_bytes", layout.response_bytes, "Response body bytes sent"),
    ):
        family = CounterMetricFamily(name, f"{what}, by protocol.", labels=["protocol"])
        for p, protocol in enumerate(PROTOCOLS):
            if totals[offset + p]:
                family.add_metric([protocol], totals[offset + p])
        yield family
    refused = CounterMetricFamily(
        "palfrey_requests_refused",
        "Requests the server answered itself: a limit (concurrency 503, body 413, head "
        "414/431), the header-read timeout (408) or a malformed request (4xx).",
        labels=["reason"],
    )
    for index, reason in enumerate(REFUSALS):
        refused.add_metric([reason], totals[layout.refused + index])
    yield refused
    for name, offset, what in (
        ("palfrey_websocket_messages", layout.ws_messages, "WebSocket messages"),
        ("palfrey_websocket_bytes", layout.ws_bytes, "WebSocket message payload bytes"),
    ):
        family = CounterMetricFamily(
            name, f"{what} of closed sessions, by direction.", labels=["direction"]
        )
        for index, direction in enumerate(DIRECTIONS):
            family.add_metric([direction], totals[offset + index])
        yield family


def _bound(value: float) -> str:
    return repr(float(value))


def _connections(layout: Layout, gauges: list[float], scrape: Scrape) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    yield GaugeMetricFamily(
        "palfrey_connections", "Open client connections.", value=gauges[layout.gauge("connections")]
    )
    streams = GaugeMetricFamily(
        "palfrey_streams", "Open HTTP/2 and HTTP/3 request streams.", labels=["protocol"]
    )
    for protocol in scrape.stream_protocols:
        name = "http2_streams" if protocol == "HTTP/2" else "http3_streams"
        streams.add_metric([protocol], gauges[layout.gauge(name)])
    yield streams
    yield GaugeMetricFamily(
        "palfrey_websocket_sessions",
        "Open WebSocket sessions.",
        value=gauges[layout.gauge("websocket_sessions")],
    )
    lag = GaugeMetricFamily(
        "palfrey_event_loop_lag_seconds",
        "How late each serving process's event loop ran a timer, at the last sample (once "
        "a second).",
        labels=["pid"],
    )
    index = layout.gauge("loop_lag")
    for block in scrape.live:
        lag.add_metric([str(block.pid)], block.values[index])
    yield lag


def _process(layout: Layout, totals: list[float], scrape: Scrape) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    if scrape.workers is not None:
        yield GaugeMetricFamily("palfrey_workers", "Worker processes alive.", value=scrape.workers)
        yield CounterMetricFamily(
            "palfrey_workers_spawned", "Worker processes started.", value=totals[layout.spawned]
        )
        restarts = CounterMetricFamily(
            "palfrey_worker_restarts",
            "Workers replaced, by reason: crash, max_requests, reload, hung.",
            labels=["reason"],
        )
        for index, reason in enumerate(RESTARTS):
            restarts.add_metric([reason], totals[layout.restarts + index])
        yield restarts
    reloads = CounterMetricFamily(
        "palfrey_config_reloads",
        "Configuration reloads (SIGHUP, a changed manifest), by outcome.",
        labels=["outcome"],
    )
    for index, outcome in enumerate(RELOADS):
        reloads.add_metric([outcome], totals[layout.reloads + index])
    yield reloads
    yield InfoMetricFamily(
        "palfrey_config",
        "The configuration being served: the manifest file and a hash of the effective "
        "configuration.",
        value=scrape.info,
    )
