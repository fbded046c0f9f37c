"""The settings objects the protocols read, filled by the plan from the config model.

They hold no defaults of their own (the model's defaults are the only ones), import
nothing heavier than `dataclasses` (the process that validates a configuration makes them
without loading the protocols), and pickle: they travel inside the Plan to every serving
process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from palfrey.protocols.websocket_core import EngineFactory

__all__ = [
    "HTTP2Settings",
    "HTTP3Settings",
    "HTTPLimits",
    "HeaderSettings",
    "ProxyProtocolSettings",
    "WebSocketSettings",
]


@dataclass(frozen=True)
class HTTPLimits:
    """What an HTTP connection enforces (filled by the plan from `http`, `limits` and
    `timeouts`; the defaults live in the config model only)."""

    max_head_size: int
    max_request_line: int
    max_header_count: int
    max_body_size: int | None
    keep_alive: float
    header_read: float | None
    #: Request-body bytes buffered for an app that is not calling `receive` before the
    #: socket stops being read (backpressure towards the client).
    body_buffer: int


@dataclass(frozen=True)
class HeaderSettings:
    """Which default headers a response gets (filled by the plan from `server`)."""

    server_header: bool
    date_header: bool
    #: Extra (name, value) fields added to every response.
    extra: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class WebSocketSettings:
    """The `websocket` section as a connection uses it (filled by the plan), with the
    backend resolved to an installed library."""

    backend: str  # "wsproto", "websockets-sansio" or "none" (upgrades refused with 400)
    max_size: int
    max_queue: int
    ping_interval: float | None
    ping_timeout: float | None
    per_message_deflate: bool
    handshake_timeout: float | None
    close_timeout: float
    idle_timeout: float | None

    @property
    def engine(self) -> EngineFactory | None:
        """The backend's frame engine factory (importing the library on first use), or
        None when WebSockets are off."""
        from palfrey.protocols.websocket_core import engine_factory

        return engine_factory(self.backend)


@dataclass(frozen=True)
class HTTP2Settings:
    """The `http2` section as a connection needs it (filled by the plan)."""

    max_concurrent_streams: int
    initial_window_size: int
    max_frame_size: int
    max_header_list_size: int
    ping_interval: float | None
    max_client_resets: int
    max_control_frames: int
    #: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3): WebSocket over HTTP/2.
    connect_protocol: bool


@dataclass(frozen=True)
class HTTP3Settings:
    """The `http3` section as a QUIC endpoint needs it (filled by the plan)."""

    idle_timeout: float
    max_concurrent_streams: int
    max_stream_data: int
    max_data: int
    max_field_section_size: int
    qpack_max_table_capacity: int
    qpack_blocked_streams: int
    max_client_resets: int
    retry: bool
    early_data: bool
    congestion_control: str  # "reno" or "cubic"
    #: Alt-Svc max age in seconds, or None when Alt-Svc is not sent.
    alt_svc_max_age: int | None
    #: RFC 9220 WebSocket over HTTP/3 (extended CONNECT) is answered.
    connect_protocol: bool


@dataclass(frozen=True)
class ProxyProtocolSettings:
    """PROXY protocol on one listener (filled by the plan from `proxy.protocol` or the
    listener's own `?proxy=` option)."""

    mode: str  # "v1", "v2" (a header required on every connection) or "auto" (optional)
    #: Peers allowed to send a header (`proxy.forwarded_allow_ips`).
    trusted: tuple[str, ...]

    @property
    def versions(self) -> frozenset[int]:
        return frozenset({1, 2}) if self.mode == "auto" else frozenset({int(self.mode[1])})
