"""plan(config): every decision about how a Config will run, made once, with no side
effects.

The Plan is the one form of the configuration that serving code reads and the one that
crosses a process boundary (the `palfrey` command's hand-over, a worker spawn, a re-exec
on reload). It holds the listeners to bind with their TLS and ALPN, the resolved HTTP/1.1,
WebSocket and event-loop backends, the settings objects the protocols read (defined beside
each protocol, holding no defaults of their own: the defaults live only in the config
model), lifespan, proxy trust, the logging dictConfig and the process topology. Nothing
downstream reads the Config.

`plan()` reads the validated Config, the environment mapping it is handed (systemd socket
activation) and which optional packages are installed. It raises `PlanError` for anything
Palfrey cannot serve, so no option is accepted and then ignored. This module imports no
pydantic: a serving process unpickles Plans and must not load it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palfrey.asgi.settings import AppSpec, HealthPaths, LifespanSettings, RequestIdSettings
from palfrey.logging import LoggingSettings, default_logging_config
from palfrey.plan import registry
from palfrey.plan.listeners import ListenerSpec, listener_specs, parse_bind
from palfrey.plan.secret import Secret
from palfrey.protocols.settings import (
    HeaderSettings,
    HTTP2Settings,
    HTTP3Settings,
    HTTPLimits,
    ProxyProtocolSettings,
    WebSocketSettings,
)

if TYPE_CHECKING:
    from palfrey.config.model import Config

__all__ = [
    "REQUEST_BODY_BUFFER",
    "ConnectionPlan",
    "ListenerPlan",
    "MetricsPlan",
    "Plan",
    "PlanError",
    "ProcessPlan",
    "QuicListenerPlan",
    "ReloadPlan",
    "ServerPlan",
    "TLSSpec",
    "plan",
]

REQUEST_BODY_BUFFER = 65536
"""Request-body bytes held for an app that is not calling `receive` before the socket
stops being read (backpressure to the client). Not an option: 64 KiB lets the common
64 KiB POST through without a pause/resume pair of syscalls."""


class PlanError(Exception):
    """Settings that validate but that Palfrey cannot serve; `problems` lists each as
    (the keys involved, what to do)."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


@dataclass(frozen=True)
class TLSSpec:
    """The `tls` section, for listeners that speak TLS (certfile set); palfrey.plan.tls
    builds the SSLContext from it."""

    certfile: Path
    keyfile: Path | None
    password: Secret | None
    password_file: Path | None
    #: uvicorn's ssl_version (an ssl module protocol constant).
    version: int
    minimum_version: str  # "1.2" or "1.3"
    cert_reqs: int
    ca_certs: Path | None
    ciphers: str | None

    def files(self) -> list[Path]:
        """The files the context is built from (watched for in-place reloads)."""
        found = [self.certfile, self.keyfile, self.ca_certs, self.password_file]
        return [path for path in found if path is not None]


@dataclass(frozen=True)
class ListenerPlan:
    """One listener and what is spoken on it."""

    spec: ListenerSpec
    #: TLS for this listener (None: cleartext).
    tls: TLSSpec | None
    #: ALPN protocols offered in the TLS handshake, most preferred first (empty: cleartext).
    alpn: tuple[str, ...]
    #: A PROXY protocol header is read before anything else on each connection.
    proxy_protocol: ProxyProtocolSettings | None = None

    def __str__(self) -> str:
        if self.spec.kind != "tcp":
            text = f"{self.spec}{' (TLS)' if self.tls else ''}"
        else:
            text = f"{'https' if self.tls else 'http'}://{self.spec}"
        if self.proxy_protocol is not None:
            mode = self.proxy_protocol.mode
            text += f" (PROXY protocol {'v1 or v2, optional' if mode == 'auto' else mode})"
        return text


@dataclass(frozen=True)
class QuicListenerPlan:
    """A UDP listener serving HTTP/3 over QUIC beside TLS TCP listeners."""

    #: kind "udp"; port 0 with `follow_port` means the bound port of `beside[0]`.
    spec: ListenerSpec
    #: The TCP listeners on the same address, whose responses advertise this one (Alt-Svc).
    beside: tuple[ListenerSpec, ...]
    #: The UDP port is the TCP listener's (http3.port unset), known once that is bound.
    follow_port: bool
    tls: TLSSpec

    def __str__(self) -> str:
        where = str(self.spec).removeprefix("udp:")
        if self.follow_port and not self.spec.port:
            return f"quic://{where} (UDP, the port {self.beside[0]} is bound to)"
        return f"quic://{where} (UDP)"


@dataclass(frozen=True)
class ConnectionPlan:
    """What every connection of a serving process needs: the protocol stack and its
    settings objects."""

    http1: str  # "httptools" or "h11"
    http2: HTTP2Settings | None
    http3: HTTP3Settings | None
    websocket: WebSocketSettings
    limits: HTTPLimits
    headers: HeaderSettings
    root_path: str
    reset_contextvars: bool
    #: Most connections and app tasks at once (503 beyond); None: unbounded.
    concurrency: int | None
    #: Peers whose forwarding headers are trusted; None: proxy headers are ignored.
    forwarded_allow_ips: tuple[str, ...] | None
    access_log: bool
    #: Request ids (None: off).
    request_id: RequestIdSettings | None


@dataclass(frozen=True)
class ServerPlan:
    """One serving process: the app, its lifespan and how the process ends."""

    app: AppSpec
    lifespan: LifespanSettings
    health: HealthPaths
    loop: str  # "uvloop", "asyncio" or a "module:function" loop-factory import string
    max_requests: int | None
    max_requests_jitter: int
    graceful_shutdown: float | None
    drain_delay: float
    malloc_top_pad: int | None
    malloc_mmap_threshold: int | None
    #: Reload TLS certificate files in place when they change.
    watch_tls: bool


@dataclass(frozen=True)
class ReloadPlan:
    """`--reload`: what to watch for source changes."""

    dirs: tuple[str, ...]
    includes: tuple[str, ...]
    excludes: tuple[str, ...]
    delay: float


@dataclass(frozen=True)
class ProcessPlan:
    """The process topology around the serving processes."""

    workers: int
    reload: ReloadPlan | None
    health_listener: ListenerSpec | None
    healthcheck_timeout: float
    healthcheck_interval: float
    restart_backoff_max: float
    crash_limit: int
    crash_window: float
    #: Re-read every layer when this manifest changes (server.reload_on_change).
    watch_manifest: Path | None

    @property
    def supervised(self) -> bool:
        """Whether a supervisor runs the serving processes (workers or --reload)."""
        return self.workers > 1 or self.reload is not None


@dataclass(frozen=True)
class MetricsPlan:
    """The `metrics` section when enabled."""

    listener: ListenerSpec
    #: Upper bounds of the request duration histogram, in seconds.
    buckets: tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    """Everything needed to serve one validated Config. Frozen and picklable."""

    listeners: tuple[ListenerPlan, ...]
    backlog: int
    tls: TLSSpec | None
    connections: ConnectionPlan
    server: ServerPlan
    logging: LoggingSettings
    process: ProcessPlan
    #: A dotenv file whose variables the app sees (ones already set win, as uvicorn).
    env_file: Path | None
    #: Prometheus metrics (None: off).
    metrics: MetricsPlan | None = None
    #: The manifest this plan was read from (shown by --check-config and in logs).
    manifest: Path | None = field(default=None, compare=False)
    #: A hash of the effective configuration (palfrey_config_info).
    config_hash: str = field(default="", compare=False)
    #: UDP listeners serving HTTP/3 (empty unless http3.enabled).
    quic: tuple[QuicListenerPlan, ...] = ()

    def protocols(self) -> tuple[str, ...]:
        """The HTTP versions served, for people: ("HTTP/1.1", "HTTP/2", "HTTP/3")."""
        conn = self.connections
        return (
            "HTTP/1.1",
            *(["HTTP/2"] if conn.http2 else []),
            *(["HTTP/3"] if conn.http3 else []),
        )

    def summary(self) -> str:
        """One line for logs and --check-config."""
        conn = self.connections
        where = ", ".join(str(listener) for listener in (*self.listeners, *self.quic))
        websocket = conn.websocket.backend
        process = self.process
        processes = "reload" if process.reload else f"{process.workers} worker(s)"
        return (
            f"{where} | {' + '.join(self.protocols())} (http1={conn.http1}, ws={websocket}) | "
            f"loop={self.server.loop} | {processes}"
        )

    def describe(self) -> list[str]:
        """The plan as `--check-config` prints it: one fact per line."""
        conn, server, process = self.connections, self.server, self.process
        lines = [f"app: {server.app.target}{' (factory)' if server.app.factory else ''}"]
        for listener in self.listeners:
            alpn = f", ALPN {', '.join(listener.alpn)}" if listener.alpn else ""
            lines.append(f"listener: {listener}{alpn}")
        for quic in self.quic:
            lines.append(f"listener: {quic}, ALPN h3")
        if conn.http3 is not None and self.quic:
            age = conn.http3.alt_svc_max_age
            lines.append(
                "Alt-Svc: off"
                if age is None
                else f'Alt-Svc: h3=":PORT"; ma={age} on the TCP listeners\' responses'
            )
        lines.append(f"protocols: {' + '.join(self.protocols())}")
        lines.append(f"HTTP/1.1 parser: {conn.http1}")
        lines.append(f"WebSocket: {conn.websocket.backend}")
        lines.append(f"event loop: {server.loop}")
        if self.tls is not None:
            lines.append(f"TLS: {self.tls.certfile}, TLS >= {self.tls.minimum_version}")
        if process.reload is not None:
            lines.append("processes: one, restarted on source changes (--reload)")
        elif process.workers > 1:
            lines.append(f"processes: a supervisor and {process.workers} workers")
        else:
            lines.append("processes: one")
        if process.health_listener is not None:
            lines.append(f"health listener: {process.health_listener}")
        if self.metrics is not None:
            lines.append(f"metrics: http://{self.metrics.listener}/metrics")
        return lines


def plan(
    config: Config, environ: Mapping[str, str] | None = None, *, manifest: Path | None = None
) -> Plan:
    """Every decision about serving `config`. Raises PlanError for what cannot be served."""
    env = os.environ if environ is None else environ
    tls = _tls(config)
    http2 = _http2(config)
    alpn = (("h2", "http/1.1") if http2 is not None else ("http/1.1",)) if tls else ()
    listeners = tuple(
        ListenerPlan(spec=spec, tls=tls, alpn=alpn, proxy_protocol=_proxy_protocol(config, spec))
        for spec in listener_specs(
            config.server,
            env,
            explicit_tcp=bool({"host", "port"} & config.server.model_fields_set),
        )
    )
    quic = _quic_listeners(config, listeners, tls)
    return Plan(
        listeners=listeners,
        backlog=config.server.backlog,
        tls=tls,
        connections=_connections(config, http2),
        server=_server(config),
        logging=_logging(config),
        process=_process(config, manifest),
        env_file=config.env_file,
        metrics=_metrics(config),
        manifest=manifest,
        quic=quic,
        config_hash=config_hash(config),
    )


def config_hash(config: Config) -> str:
    """16 hex digits of the SHA-256 of the effective configuration as JSON (secrets
    redacted, as --print-config shows them): what palfrey_config_info reports."""
    import hashlib

    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def _metrics(config: Config) -> MetricsPlan | None:
    section = config.metrics
    if not section.enabled:
        return None
    listener = parse_bind(section.listener, options=False)
    return MetricsPlan(listener=listener, buckets=tuple(section.buckets))


def _request_id(config: Config) -> RequestIdSettings | None:
    section = config.request_id
    if not section.enabled:
        return None
    return RequestIdSettings(
        header=None if section.header is None else section.header.encode("latin-1"),
        response_header=(
            None if section.response_header is None else section.response_header.encode("latin-1")
        ),
        trusted=config.proxy.forwarded_allow_ips,
    )


def _quic_listeners(
    config: Config, listeners: tuple[ListenerPlan, ...], tls: TLSSpec | None
) -> tuple[QuicListenerPlan, ...]:
    """One UDP listener per address of the TLS TCP listeners: on the TCP port, or on
    `http3.port`. Refuses what HTTP/3 cannot be served beside."""
    section = config.http3
    if not section.enabled or tls is None:
        return ()  # without TLS the config was refused already (model.contradictions)
    tcp = [listener.spec for listener in listeners if listener.spec.kind == "tcp"]
    problems: list[tuple[tuple[str, ...], str]] = []
    if not tcp:
        problems.append(
            (
                ("http3.enabled", "server.bind"),
                "HTTP/3 needs a TCP listener (server.host and server.port, or a "
                '"host:port" entry in server.bind) to put its UDP listener beside; UNIX '
                "sockets and inherited descriptors have no address to share",
            )
        )
    if tls.cert_reqs:
        problems.append(
            (
                ("http3.enabled", "tls.cert_reqs"),
                "HTTP/3 cannot ask for client certificates (aioquic's server does not "
                "request them), so it would let clients in without one: turn HTTP/3 off "
                "or set tls.cert_reqs to none",
            )
        )
    if config.workers.count > 1 and not sys.platform.startswith("linux"):
        problems.append(
            (
                ("http3.enabled", "workers.count"),
                "HTTP/3 with several workers steers QUIC packets with a Linux socket "
                "option (SO_ATTACH_REUSEPORT_CBPF): run one worker on this system",
            )
        )
    if problems:
        raise PlanError(problems)
    found: dict[ListenerSpec, list[ListenerSpec]] = {}
    for spec in tcp:
        port = spec.port if section.port is None else section.port
        udp = ListenerSpec(kind="udp", host=spec.host, port=port)
        found.setdefault(udp, []).append(spec)
    return tuple(
        QuicListenerPlan(spec=udp, beside=tuple(beside), follow_port=section.port is None, tls=tls)
        for udp, beside in found.items()
    )


def _proxy_protocol(config: Config, spec: ListenerSpec) -> ProxyProtocolSettings | None:
    """The listener's own "?proxy=" option, else `proxy.protocol`."""
    mode = spec.proxy or config.proxy.protocol
    if mode == "off":
        return None
    return ProxyProtocolSettings(mode=mode, trusted=config.proxy.forwarded_allow_ips)


def _tls(config: Config) -> TLSSpec | None:
    section = config.tls
    if section.certfile is None:
        return None
    password = section.keyfile_password
    return TLSSpec(
        certfile=section.certfile,
        keyfile=section.keyfile,
        password=None if password is None else Secret(password.get_secret_value()),
        password_file=section.keyfile_password_file,
        version=section.version,
        minimum_version=section.minimum_version,
        cert_reqs=section.cert_reqs,
        ca_certs=section.ca_certs,
        ciphers=section.ciphers,
    )


def _websocket(config: Config) -> WebSocketSettings:
    backend = registry.websocket_backend(config.websocket.backend)
    module = registry.WEBSOCKETS.get(backend)
    if module is None or not registry.installed(module.module):
        backend = "none"  # upgrades are refused with 400 (and a one-time warning)
    ws = config.websocket
    return WebSocketSettings(
        backend=backend,
        max_size=int(ws.max_size),
        max_queue=ws.max_queue,
        ping_interval=ws.ping_interval,
        ping_timeout=ws.ping_timeout,
        per_message_deflate=ws.per_message_deflate,
        handshake_timeout=ws.handshake_timeout,
        close_timeout=ws.close_timeout,
        idle_timeout=ws.idle_timeout,
    )


def _http2(config: Config) -> HTTP2Settings | None:
    section = config.http2
    if not section.enabled:
        return None
    return HTTP2Settings(
        max_concurrent_streams=section.max_concurrent_streams,
        initial_window_size=int(section.initial_window_size),
        max_frame_size=int(section.max_frame_size),
        max_header_list_size=int(section.max_header_list_size),
        ping_interval=section.ping_interval,
        max_client_resets=section.max_client_resets,
        max_control_frames=section.max_control_frames,
        connect_protocol=_websocket(config).backend != "none",
    )


def _http3(config: Config) -> HTTP3Settings | None:
    section = config.http3
    if not section.enabled or config.tls.certfile is None:
        return None
    return HTTP3Settings(
        idle_timeout=section.idle_timeout,
        max_concurrent_streams=section.max_concurrent_streams,
        max_stream_data=int(section.max_stream_data),
        max_data=int(section.max_data),
        max_field_section_size=int(section.max_field_section_size),
        qpack_max_table_capacity=int(section.qpack_max_table_capacity),
        qpack_blocked_streams=section.qpack_blocked_streams,
        max_client_resets=section.max_client_resets,
        retry=section.retry,
        early_data=section.early_data,
        congestion_control=section.congestion_control,
        alt_svc_max_age=section.alt_svc_max_age if section.alt_svc else None,
        connect_protocol=_websocket(config).backend != "none",
    )


def _connections(config: Config, http2: HTTP2Settings | None) -> ConnectionPlan:
    max_body = config.limits.max_body_size
    proxy = config.proxy
    return ConnectionPlan(
        http1=registry.http1_backend(config.http.backend),
        http2=http2,
        http3=_http3(config),
        websocket=_websocket(config),
        limits=HTTPLimits(
            max_head_size=int(config.http.max_head_size),
            max_request_line=config.http.max_request_line,
            max_header_count=config.http.max_header_count,
            max_body_size=None if max_body is None else int(max_body),
            keep_alive=config.timeouts.keep_alive,
            header_read=config.timeouts.header_read,
            body_buffer=REQUEST_BODY_BUFFER,
        ),
        headers=HeaderSettings(
            server_header=config.server.server_header,
            date_header=config.server.date_header,
            extra=config.server.headers,
        ),
        root_path=config.server.root_path,
        reset_contextvars=config.server.reset_contextvars,
        concurrency=config.limits.concurrency,
        forwarded_allow_ips=proxy.forwarded_allow_ips if proxy.headers else None,
        access_log=config.logging.access_log,
        request_id=_request_id(config),
    )


def _server(config: Config) -> ServerPlan:
    lifespan = config.lifespan
    pad = config.server.malloc_top_pad
    threshold = config.server.malloc_mmap_threshold
    return ServerPlan(
        app=AppSpec(
            target=config.app,
            factory=config.factory,
            app_dir=config.app_dir,
            interface=config.interface,
        ),
        lifespan=LifespanSettings(
            mode=lifespan.mode,
            startup_timeout=lifespan.startup_timeout,
            shutdown_timeout=lifespan.shutdown_timeout,
        ),
        health=HealthPaths(
            liveness=config.health.liveness_path, readiness=config.health.readiness_path
        ),
        loop=registry.loop_name(config.server.loop),
        max_requests=config.limits.max_requests,
        max_requests_jitter=config.limits.max_requests_jitter,
        graceful_shutdown=config.timeouts.graceful_shutdown,
        drain_delay=config.server.drain_delay,
        malloc_top_pad=None if pad is None else int(pad),
        malloc_mmap_threshold=None if threshold is None else int(threshold),
        watch_tls=config.server.reload_on_change and config.tls.certfile is not None,
    )


def _logging(config: Config) -> LoggingSettings:
    section = config.logging
    custom = section.config is not None or section.dict_config is not None
    dict_config: dict[str, Any] | None = section.dict_config
    if not custom:
        dict_config = default_logging_config(
            section.use_colors,
            section.format,
            access_format=section.access_format,
            access_atoms=section.access_atoms,
            access_destination=section.access_destination,
        )
    return LoggingSettings(
        dict_config=dict_config,
        file=None if section.config is None else str(section.config),
        # A logging config of the user's own keeps its levels unless one is given.
        level=section.level if not custom or "level" in section.model_fields_set else None,
        access_log=section.access_log,
        aliases=custom,
        access_format=section.access_format,
        access_destination=section.access_destination,
    )


def _process(config: Config, manifest: Path | None) -> ProcessPlan:
    workers, reload = config.workers, config.reload
    listener = config.health.listener
    return ProcessPlan(
        workers=workers.count,
        reload=ReloadPlan(
            dirs=reload.dirs, includes=reload.includes, excludes=reload.excludes, delay=reload.delay
        )
        if reload.enabled
        else None,
        health_listener=None if listener is None else parse_bind(listener, options=False),
        healthcheck_timeout=workers.healthcheck_timeout,
        healthcheck_interval=workers.healthcheck_interval,
        restart_backoff_max=workers.restart_backoff_max,
        crash_limit=workers.crash_limit,
        crash_window=workers.crash_window,
        watch_manifest=manifest if config.server.reload_on_change else None,
    )
