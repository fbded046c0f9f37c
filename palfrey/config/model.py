"""The one definition of every Palfrey option.

Each field's docstring is its documentation: the CLI help, the JSON schema, the env var
names and docs/reference/configuration.md are all generated from this module (the
docstrings are read by palfrey.config.docs when documentation is asked for, not at
import: building these models is on every start-up's path). A field
that carries `Uvicorn(...)` metadata is a uvicorn 0.54 option and keeps uvicorn's flag,
flat env name (`PALFREY_<PARAM>`) and default, unless its docstring says why not.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from palfrey.config.binds import parse_bind_text
from palfrey.config.types import VALUE_STYLE, FileMode, Flag, Header, Seconds, Size, Uvicorn

Port = Annotated[int, Field(ge=0, le=65535)]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _http_backend(value: Any) -> Any:
    if isinstance(value, str) and value not in ("auto", "h11", "httptools"):
        custom = " (custom protocol classes are not supported)" if ":" in value else ""
        raise ValueError(
            f'expected "auto", "h11" or "httptools"; the --http flag and PALFREY_HTTP also '
            f'take "h2" and "h3"{custom}'
        )
    return value


def _check_import_string(value: str | None) -> str | None:
    if value is not None:
        module, sep, attribute = value.partition(":")
        if not sep or not module.strip() or not attribute.strip():
            raise ValueError('expected an import string "module:attribute", as in main:app')
    return value


def _websockets_alias(value: Any) -> Any:
    # uvicorn's legacy "websockets" backend; Palfrey runs the same library's sans-IO
    # protocol for it, so both spellings are one setting (and compare equal).
    return "websockets-sansio" if value == "websockets" else value


class Section(BaseModel):
    """Base of every config section: frozen, strict about keys, documented by docstrings."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    def __hash__(self) -> int:
        # Some values (the inline logging dictConfig) are dicts; hash the canonical dump.
        return hash(self.model_dump_json())

    @model_validator(mode="before")
    @classmethod
    def _none_words(cls, data: Any) -> Any:
        """TOML has no null, so "none" (or "null") unsets an optional key in any source."""
        if not isinstance(data, dict):
            return data
        return {
            key: None
            if isinstance(value, str)
            and value.strip().lower() in ("none", "null")
            and key in _optional_fields(cls)
            else value
            for key, value in data.items()
        }


@cache
def _optional_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if type(None) in typing.get_args(field.annotation)
    )


class ServerSection(Section):
    """Listeners, default response headers and the event loop."""

    host: Annotated[str, Uvicorn("host")] = "127.0.0.1"
    """Address to bind the TCP listener to. Use "::" for all IPv6 (and, on most systems,
    IPv4) addresses, "0.0.0.0" for all IPv4 addresses."""

    port: Annotated[Port, Uvicorn("port")] = 8000
    """TCP port to bind. 0 asks the OS for a free port (the bound port is logged)."""

    uds: Annotated[Path | None, Uvicorn("uds")] = None
    """Bind a UNIX domain socket at this path instead of host/port. The socket is
    removed when the server exits."""

    uds_permissions: FileMode = 0o666
    """File mode of the UNIX socket (octal, e.g. "660"). uvicorn always uses 0o666."""

    fd: Annotated[int | None, Field(ge=0), Uvicorn("fd")] = None
    """Serve on an already-bound listening socket inherited as this file descriptor."""

    bind: tuple[str, ...] = ()
    """Several listeners at once: "host:port", "[::1]:port", "unix:/path/to.sock" or
    "fd://3". When set, it replaces host/port. An entry may end with "?proxy=v1", "v2",
    "auto" or "off" to set the PROXY protocol of that listener (overriding
    proxy.protocol), as in "0.0.0.0:8443?proxy=v2"."""

    systemd_socket_activation: bool = True
    """Serve on sockets passed by systemd socket activation (LISTEN_FDS/LISTEN_PID)
    when they are present and no other listener is configured."""

    backlog: Annotated[int, Field(ge=1), Uvicorn("backlog")] = 2048
    """Maximum number of connections waiting to be accepted (listen backlog)."""

    root_path: Annotated[str, Uvicorn("root_path")] = ""
    """ASGI root_path: the path prefix under which the app is mounted behind a proxy."""

    headers: Annotated[tuple[Header, ...], Uvicorn("headers", "--header")] = ()
    """Extra headers added to every response, each "Name: Value"."""

    server_header: Annotated[bool, Uvicorn("server_header")] = True
    """Send a "Server: palfrey" header unless the app sets one."""

    date_header: Annotated[bool, Uvicorn("date_header")] = True
    """Send a "Date" header unless the app sets one."""

    loop: Annotated[str, Uvicorn("loop")] = "auto"
    """Event loop: "auto" (uvloop when installed, else asyncio), "asyncio", "uvloop", or
    an import string "module:function" returning an event loop factory."""

    reset_contextvars: Annotated[bool, Uvicorn("reset_contextvars")] = False
    """Run each request in a fresh contextvars context instead of a copy of the
    server's."""

    drain_delay: Seconds = 0.0
    """On SIGTERM/SIGINT, keep accepting and serving for this long while the readiness
    endpoint answers 503, then close the listeners and drain. On Kubernetes set it a little
    above the time endpoints take to drop the pod (5-10 s), instead of a preStop sleep.
    Rolling restarts (SIGHUP, max_requests) skip it."""

    malloc_top_pad: Size | None = 4 * 1024 * 1024  # type: ignore[assignment]
    """glibc only: free heap the C allocator keeps when it shrinks the heap (mallopt
    M_TOP_PAD; glibc's own default is 128 KiB). Request and response bodies are
    allocated and freed on every request, and with a small pad the allocator hands that
    memory back to the kernel and faults it in again on the next request: that was most
    of the kernel time of a 64 KiB POST echo with 64 connections. Costs up to this much
    resident memory once the server has been busy, nothing when idle. "none" keeps the
    allocator's defaults, as does setting MALLOC_TOP_PAD_ in the environment."""

    malloc_mmap_threshold: Annotated[Size, Field(ge=4096, le=32 * 1024 * 1024)] | None = (
        2 * 1024 * 1024  # type: ignore[assignment]
    )
    """glibc only: blocks of at least this size get a memory mapping of their own,
    unmapped when freed; smaller ones come from the heap and are reused (mallopt
    M_MMAP_THRESHOLD, with the trim threshold at twice this, the pair glibc's own
    adjustment picks). glibc starts at 128 KiB and raises it only after freeing a large
    block, never once `malloc_top_pad` is set; every TLS read allocates 256 KiB, so each
    read cost an mmap, an mremap, an munmap and two page faults. Larger bodies and
    WebSocket messages are still mapped each time; a higher value (at most 32 MiB)
    avoids that and keeps up to twice it of freed heap. "none" keeps the allocator's
    defaults, as does setting MALLOC_MMAP_THRESHOLD_ in the environment."""

    plan_cache: Annotated[bool, Flag("--plan-cache")] = True
    """Keep the plan of a valid configuration in a per-user cache
    ($XDG_CACHE_HOME/palfrey/plans, else ~/.cache/palfrey/plans) and, at the next start
    with the very same command line, environment, files and installed packages, serve it
    without validating again: start-up then skips loading the validation library. Any
    difference (one byte of the manifest or env file, a variable, a flag, an upgrade)
    validates afresh. A configuration that reads a secrets directory or holds a secret
    value is never cached. `palfrey --check-config` with the same settings fills the
    cache, e.g. while building an image. Off: every start validates, nothing is stored."""

    reload_on_change: bool = False
    """Watch the manifest file (and the TLS certificate, key and CA files) and reload when
    they change, as on SIGHUP: the manifest through a rolling restart, TLS files in place
    without one. Follows symlinks, so Kubernetes ConfigMap and Secret updates (an atomic
    swap of the "..data" link) are seen. Works with one worker or many."""

    @field_validator("loop")
    @classmethod
    def _check_loop(cls, value: str) -> str:
        if value in ("auto", "asyncio", "uvloop") or ":" in value:
            return value
        raise ValueError('expected "auto", "asyncio", "uvloop" or an import string "module:attr"')

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            parse_bind_text(item)
        return value


class HTTPSection(Section):
    """HTTP/1.1: the parser backend and the limits that protect it."""

    backend: Annotated[
        Literal["auto", "h11", "httptools"], BeforeValidator(_http_backend), Uvicorn("http")
    ] = "auto"
    """HTTP/1.1 parser: "httptools" (fast, C), "h11" (pure Python) or "auto" (httptools
    when installed). The flag and flat env also accept "h2" and "h3", which turn HTTP/2 or
    HTTP/3 on beside HTTP/1.1."""

    max_head_size: Annotated[Size, Uvicorn("h11_max_incomplete_event_size")] = 65536  # type: ignore[assignment]
    """Largest request head (request line plus headers) in bytes; larger gets 431.
    uvicorn's h11 default is 16 KiB and its httptools backend has no limit; Palfrey
    applies 64 KiB to both."""

    max_request_line: Annotated[int, Field(ge=64)] = 8190
    """Longest request line (method, target, version) in bytes; longer gets 414."""

    max_header_count: Annotated[int, Field(ge=1)] = 100
    """Most header fields in one request; more gets 431."""


class HTTP2Section(Section):
    """HTTP/2, served on the same listeners as HTTP/1.1 when enabled."""

    enabled: Annotated[bool, Uvicorn("http2")] = False
    """Serve HTTP/2 beside HTTP/1.1: ALPN "h2" over TLS, prior knowledge and
    "Upgrade: h2c" on cleartext. Needs the "http2" extra."""

    max_concurrent_streams: Annotated[int, Field(ge=1)] = 100
    """SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients (RFC 9113 §6.5.2)."""

    initial_window_size: Annotated[Size, Field(le=2**31 - 1)] = 65535  # type: ignore[assignment]
    """SETTINGS_INITIAL_WINDOW_SIZE for each stream, in bytes (RFC 9113 §6.9.2)."""

    max_frame_size: Annotated[Size, Field(ge=2**14, le=2**24 - 1)] = 16384  # type: ignore[assignment]
    """SETTINGS_MAX_FRAME_SIZE: the largest frame payload accepted (RFC 9113 §4.2)."""

    max_header_list_size: Annotated[Size, Field(ge=1)] = 65536  # type: ignore[assignment]
    """SETTINGS_MAX_HEADER_LIST_SIZE: the largest decoded header list accepted."""

    ping_interval: Seconds | None = None
    """Send a PING to idle connections this often; unset sends none."""

    max_client_resets: Annotated[int, Field(ge=1)] = 200
    """Streams a client may cancel with RST_STREAM in a burst (refilled over 10 seconds)
    before the connection is closed with GOAWAY ENHANCE_YOUR_CALM: the rapid reset
    attack, CVE-2023-44487."""

    max_control_frames: Annotated[int, Field(ge=1)] = 1000
    """SETTINGS, PING, PRIORITY and empty DATA frames a client may send in a burst
    (refilled over 10 seconds) before the connection is closed with GOAWAY
    ENHANCE_YOUR_CALM (settings and ping floods, RFC 9113 §10.5)."""


class HTTP3Section(Section):
    """HTTP/3 (aioquic) on UDP listeners beside the TLS TCP ones."""

    enabled: bool = False
    """Serve HTTP/3 over QUIC on UDP and advertise it with Alt-Svc. Needs TLS, a TCP
    listener (host and port, or bind) to put each UDP listener beside, and the "http3"
    extra. With several workers it needs Linux (SO_ATTACH_REUSEPORT_CBPF)."""

    port: Port | None = None
    """UDP port for HTTP/3 on every TCP listener's address; unset uses each TCP
    listener's own port (the bound one when that is 0)."""

    alt_svc: bool = True
    """Advertise HTTP/3 with an Alt-Svc header (RFC 7838) on responses from the TCP
    listeners, naming the UDP port, so browsers and curl switch to HTTP/3."""

    alt_svc_max_age: Annotated[int, Field(ge=0)] = 86400
    """How long, in seconds, clients may remember the Alt-Svc advertisement ("ma",
    RFC 7838 §3.1; 24 hours is the RFC's default)."""

    idle_timeout: Annotated[Seconds, Field(gt=0)] = 60.0
    """Close a QUIC connection idle for this long (max_idle_timeout, RFC 9000 §10.1)."""

    max_concurrent_streams: Annotated[int, Field(ge=1)] = 100
    """Request streams a client may have open at once (initial_max_streams_bidi,
    RFC 9000 §4.6); one more is granted as each one ends."""

    max_stream_data: Annotated[Size, Field(ge=1024)] = 1048576  # type: ignore[assignment]
    """Request-body bytes a client may send on one stream ahead of the app reading them
    (the stream's flow-control window, RFC 9000 §4.1): credit is returned only as the app
    calls receive, so a slow app slows the upload instead of filling memory."""

    max_data: Annotated[Size, Field(ge=1024)] = 16777216  # type: ignore[assignment]
    """Bytes a client may send on a whole connection ahead of acknowledgement by flow
    control (initial_max_data, RFC 9000 §4.1); raised as data is received, each stream
    staying bounded by max_stream_data."""

    max_field_section_size: Annotated[Size, Field(ge=1024)] = 65536  # type: ignore[assignment]
    """Largest decoded request header section (names, values and 32 bytes per field,
    RFC 9114 §4.2.2); larger requests get 431."""

    qpack_max_table_capacity: Annotated[Size, Field(le=65536)] = 4096  # type: ignore[assignment]
    """Bytes of QPACK dynamic table the client's encoder may use
    (SETTINGS_QPACK_MAX_TABLE_CAPACITY, RFC 9204 §5)."""

    qpack_blocked_streams: Annotated[int, Field(ge=0, le=1000)] = 16
    """Streams that may wait for QPACK encoder instructions at once
    (SETTINGS_QPACK_BLOCKED_STREAMS, RFC 9204 §2.1.2); more is a connection error."""

    max_client_resets: Annotated[int, Field(ge=1)] = 200
    """Streams a client may cancel (RESET_STREAM or STOP_SENDING) in a burst (refilled
    over 10 seconds) before the connection is closed with H3_EXCESSIVE_LOAD: the rapid
    reset attack, as for HTTP/2."""

    retry: bool = False
    """Validate client addresses with a Retry packet before any handshake work (RFC 9000
    §8.1.2): protects against spoofed-source floods and amplification at the cost of one
    extra round trip per new connection."""

    early_data: bool = False
    """Accept 0-RTT requests on resumed connections (RFC 9001 §4.6). Off by default: 0-RTT
    data can be replayed by an attacker (RFC 8446 §8), so only enable it for apps whose
    requests are safe to repeat. Session tickets are kept in memory per worker."""

    congestion_control: Literal["reno", "cubic"] = "reno"
    """QUIC congestion controller: "reno" (RFC 9002) or "cubic" (RFC 9438)."""


class WebSocketSection(Section):
    """WebSocket over HTTP/1.1 (and HTTP/2 when enabled)."""

    backend: Annotated[
        Literal["auto", "websockets", "websockets-sansio", "wsproto", "none"],
        AfterValidator(_websockets_alias),
        Uvicorn("ws"),
    ] = "auto"
    """WebSocket implementation: "wsproto", "websockets-sansio" (the websockets library's
    sans-IO protocol; "websockets" is accepted as the same), "auto" (the best installed) or
    "none" (upgrades are refused)."""

    max_size: Annotated[Size, Field(ge=1), Uvicorn("ws_max_size")] = 16777216  # type: ignore[assignment]
    """Largest incoming message in bytes; larger closes the connection with 1009."""

    max_queue: Annotated[int, Field(ge=1), Uvicorn("ws_max_queue")] = 32
    """Incoming messages buffered for the app before reading from the socket pauses."""

    ping_interval: Annotated[Seconds | None, Uvicorn("ws_ping_interval")] = 20.0
    """Send a ping this often; unset sends none."""

    ping_timeout: Annotated[Seconds | None, Uvicorn("ws_ping_timeout")] = 20.0
    """Close with 1011 when a pong does not arrive within this time."""

    per_message_deflate: Annotated[bool, Uvicorn("ws_per_message_deflate"), VALUE_STYLE] = True
    """Negotiate permessage-deflate compression (RFC 7692) when the client offers it."""

    handshake_timeout: Seconds | None = 10.0
    """How long the app may take to accept or refuse a WebSocket after the upgrade
    request arrived; then the client gets HTTP 503 and the app a disconnect."""

    close_timeout: Seconds = 10.0
    """After sending a close frame, wait this long for the client's before dropping the
    connection (RFC 6455 §7.1.1)."""

    idle_timeout: Seconds | None = None
    """Close a WebSocket (1001) when no message passed either way for this long; unset
    keeps idle connections (pings still detect dead peers)."""


# ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED and ssl.PROTOCOL_TLS_SERVER, spelled as the
# numbers they are: the ssl module is not needed to read a configuration (a test checks
# they match).
_CERT_REQS = {"none": 0, "optional": 1, "required": 2}
PROTOCOL_TLS_SERVER = 17


def _cert_reqs(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _CERT_REQS:
            return int(_CERT_REQS[text])
        if text.isdigit():
            return int(text)
    return value


class TLSSection(Section):
    """TLS for every TCP listener (and QUIC)."""

    certfile: Annotated[Path | None, Uvicorn("ssl_certfile")] = None
    """Certificate chain (PEM). Setting it turns TLS on."""

    keyfile: Annotated[Path | None, Uvicorn("ssl_keyfile")] = None
    """Private key (PEM), if not inside certfile."""

    keyfile_password: Annotated[SecretStr | None, Uvicorn("ssl_keyfile_password")] = None
    """Password of an encrypted private key. Never printed. Prefer keyfile_password_file
    or a secrets directory over putting it in a manifest."""

    keyfile_password_file: Path | None = None
    """Read the key password from this file (e.g. a mounted Kubernetes Secret); trailing
    newlines are ignored."""

    version: Annotated[int, Uvicorn("ssl_version")] = PROTOCOL_TLS_SERVER
    """ssl module protocol constant, as uvicorn takes it. Versions below
    minimum_version are refused whatever this says."""

    minimum_version: Literal["1.2", "1.3"] = "1.2"
    """Lowest TLS version accepted."""

    cert_reqs: Annotated[
        Literal[0, 1, 2], BeforeValidator(_cert_reqs), Uvicorn("ssl_cert_reqs")
    ] = 0
    """Client certificates: 0 or "none", 1 or "optional", 2 or "required" (needs
    ca_certs)."""

    ca_certs: Annotated[Path | None, Uvicorn("ssl_ca_certs")] = None
    """CA bundle (PEM) used to verify client certificates."""

    ciphers: Annotated[str | None, Uvicorn("ssl_ciphers")] = None
    """OpenSSL cipher string for TLS 1.2; unset keeps OpenSSL's secure defaults."""

    @property
    def enabled(self) -> bool:
        return self.certfile is not None


class LifespanSection(Section):
    """The ASGI lifespan protocol (startup and shutdown events)."""

    mode: Annotated[Literal["auto", "on", "off"], BeforeValidator(_lower), Uvicorn("lifespan")] = (
        "auto"
    )
    """"on": the app must support lifespan; "auto": use it if the app does; "off": never."""

    startup_timeout: Seconds | None = 60.0
    """Fail startup (exit 3) when the app has not completed startup within this time.
    uvicorn waits forever."""

    shutdown_timeout: Seconds | None = 30.0
    """Stop waiting for the app's lifespan shutdown after this time."""


def _check_trusted(value: str) -> None:
    if value == "*" or value.startswith(("/", "unix:")):
        return  # everyone, or a UNIX socket path (its peers have no address)
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address, a CIDR network, '*' or a UNIX socket path "
            "(host names are not resolved)"
        ) from None


class ProxySection(Section):
    """Trusting a reverse proxy: its forwarding headers and the PROXY protocol."""

    headers: Annotated[bool, Uvicorn("proxy_headers")] = True
    """Use X-Forwarded-For/Proto/Host/Port/Prefix and RFC 7239 Forwarded to set the
    client address, scheme, host and root_path, when the peer is trusted."""

    forwarded_allow_ips: Annotated[tuple[str, ...], Uvicorn("forwarded_allow_ips")] = (
        "127.0.0.1",
        "::1",
    )
    """Peers whose forwarding headers (and PROXY protocol headers) are trusted: IP
    addresses, CIDR networks, "*" for all, or a UNIX socket path. Defaults to
    $FORWARDED_ALLOW_IPS when set."""

    protocol: Literal["off", "v1", "v2", "auto"] = "off"
    """Expect a PROXY protocol header (v1 text or v2 binary, as HAProxy, AWS NLB and other
    TCP load balancers send it) at the start of every connection, before TLS, and take the
    client address from it. "v1" or "v2" require that version on every connection; "auto"
    accepts either, or none. Only peers in forwarded_allow_ips may send one: a connection
    from anyone else is closed (in "auto", served as sent if it carries no header). A
    listener in server.bind can override this with "?proxy=..."."""

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            _check_trusted(item)
        return value


class LimitsSection(Section):
    """Load shedding and request budgets."""

    concurrency: Annotated[int | None, Field(ge=1), Uvicorn("limit_concurrency")] = None
    """Most connections and tasks at once; beyond it requests get 503."""

    max_requests: Annotated[int | None, Field(ge=1), Uvicorn("limit_max_requests")] = None
    """End the process after this many requests (the supervisor replaces it)."""

    max_requests_jitter: Annotated[int, Field(ge=0), Uvicorn("limit_max_requests_jitter")] = 0
    """Add a random 0..N to max_requests so workers do not all recycle at once."""

    max_body_size: Size | None = None
    """Largest request body accepted, in bytes; larger gets 413. Unset: no limit."""


class TimeoutsSection(Section):
    """Timeouts that bound idle and slow connections and shutdown."""

    keep_alive: Annotated[Seconds, Uvicorn("timeout_keep_alive")] = 5.0
    """Close a keep-alive connection idle for this long between requests. Keep it longer
    than your load balancer's idle timeout."""

    header_read: Seconds | None = 30.0
    """Close a connection whose request head has not fully arrived within this time
    (slowloris protection); it also bounds a new connection's first byte."""

    graceful_shutdown: Annotated[Seconds | None, Uvicorn("timeout_graceful_shutdown")] = 30.0
    """On shutdown, wait this long for in-flight requests before cancelling them.
    uvicorn's default waits forever; set "none" for that."""


class WorkersSection(Section):
    """Worker processes."""

    count: Annotated[int, Field(ge=1), Uvicorn("workers")] = 1
    """Number of worker processes. Defaults to $WEB_CONCURRENCY when set."""

    healthcheck_timeout: Annotated[Seconds, Uvicorn("timeout_worker_healthcheck")] = 5.0
    """A worker that does not answer a health ping within this time is replaced."""

    healthcheck_interval: Annotated[Seconds, Field(gt=0)] = 5.0
    """How often the supervisor pings each worker. The ping is answered by the worker's
    event loop, so a loop blocked for longer than healthcheck_timeout gets the worker
    replaced."""

    restart_backoff_max: Seconds = 10.0
    """Longest wait before replacing a worker that crashed; the wait starts at 0.1 s and
    doubles with each crash in a row."""

    crash_limit: Annotated[int, Field(ge=1)] = 5
    """Give up and exit with status 1 when workers crash this many times within
    crash_window (a crash loop); a worker that exits with status 0 is not a crash."""

    crash_window: Annotated[Seconds, Field(gt=0)] = 60.0
    """The time window in which crash_limit crashes mean a crash loop."""


class ReloadSection(Section):
    """Development auto-reload on file changes."""

    enabled: Annotated[bool, Uvicorn("reload")] = False
    """Restart the server when watched files change. For development only."""

    dirs: Annotated[tuple[str, ...], Uvicorn("reload_dirs", "--reload-dir")] = ()
    """Directories to watch; unset watches the current directory."""

    includes: Annotated[tuple[str, ...], Uvicorn("reload_includes", "--reload-include")] = ()
    """Glob patterns of files to watch; unset means "*.py"."""

    excludes: Annotated[tuple[str, ...], Uvicorn("reload_excludes", "--reload-exclude")] = ()
    """Glob patterns of files to ignore; unset means ".*, .py[cod], .sw.*, ~*"."""

    delay: Annotated[Seconds, Uvicorn("reload_delay")] = 0.25
    """Seconds to wait between checks / to batch changes before restarting."""


def _check_health_path(value: str | None) -> str | None:
    if value is not None and not value.startswith("/"):
        raise ValueError('a path starts with "/", as in "/healthz"')
    return value


class HealthSection(Section):
    """Built-in liveness and readiness endpoints for Kubernetes probes. Off by default."""

    liveness_path: Annotated[str | None, AfterValidator(_check_health_path)] = None
    """Answer GET on this path (e.g. "/healthz") with 200 on the app's listeners, without
    calling the app. The answer comes from the worker's event loop, so it also proves the
    loop is responsive."""

    readiness_path: Annotated[str | None, AfterValidator(_check_health_path)] = None
    """Answer GET on this path (e.g. "/readyz") with 200 while serving and 503 from the
    moment shutdown begins (during server.drain_delay), without calling the app."""

    listener: str | None = None
    """A separate listener, "host:port" or "unix:/path", that answers only the liveness and
    readiness paths ("/healthz" and "/readyz" unless set). With several workers the
    supervisor serves it: ready while at least one worker is ready and not shutting down."""

    @field_validator("listener")
    @classmethod
    def _check_listener(cls, value: str | None) -> str | None:
        if value is not None and parse_bind_text(value, options=False).kind == "fd":
            raise ValueError(f'{value!r} is not "host:port", "[::1]:port" or "unix:/path"')
        return value


class LoggingSection(Section):
    """Server and access logs."""

    level: Annotated[
        Literal["critical", "error", "warning", "info", "debug", "trace"],
        BeforeValidator(_lower),
        Uvicorn("log_level"),
    ] = "info"
    """Log level; "trace" also logs every ASGI message."""

    config: Annotated[Path | None, Uvicorn("log_config")] = None
    """A logging config file: .json or .yaml for dictConfig, anything else for the
    INI fileConfig format."""

    dict_config: dict[str, Any] | None = None
    """An inline logging.config.dictConfig table, as an alternative to config."""

    format: Literal["text", "json"] = "text"
    """Default log format: uvicorn-style "text" lines, or "json" (one object per line with
    time, level, logger, message and the access-log fields). Ignored when config or
    dict_config is set."""

    access_log: Annotated[bool, Uvicorn("access_log")] = True
    """Write one access-log line per request (and two per WebSocket session: the
    handshake and the close)."""

    access_format: Annotated[str | None, Flag("--access-log-format")] = None
    """The access line as a format of named fields, gunicorn style: '%(h)s %(l)s %(u)s
    %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', '%(client_addr)s %(request_line)s
    %(status)s %(duration_ms)s', headers as %({User-Agent}i)s and %({Content-Type}o)s,
    environment variables as %({HOSTNAME}e)s. Unset: uvicorn's line. With format = "json",
    the fields it names become the keys of each JSON line. docs/how-to/observability.md
    lists every field."""

    access_atoms: Annotated[Literal["gunicorn", "hypercorn"], Flag("--access-log-atoms")] = (
        "gunicorn"
    )
    """Whose meaning the one-letter atoms of access_format take where gunicorn and
    hypercorn differ: h (host, or host:port), r and H (HTTP/1.1, or 1.1), b and B (body
    bytes, or the Content-Length header)."""

    access_destination: Annotated[str, Flag("--access-log-destination")] = "stdout"
    """Where access lines go: "stdout", "stderr" or a file path (appended to; reopened on
    SIGUSR1, so logrotate can move it)."""

    use_colors: Annotated[bool | None, Uvicorn("use_colors")] = None
    """Colour log output; unset colours only when writing to a terminal."""

    @field_validator("access_format")
    @classmethod
    def _check_access_format(cls, value: str | None) -> str | None:
        if value is not None:
            from palfrey.accesslog.compile import fields_of

            fields_of(value)  # both atom dialects know the same names
        return value

    @field_validator("access_destination")
    @classmethod
    def _check_destination(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('expected "stdout", "stderr" or a file path')
        return value


def _check_header_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
        raise ValueError(f"{value!r} is not a header name (RFC 9110 §5.1)")
    return value.lower() if value is not None else None


class RequestIdSection(Section):
    """A request id for every request: in the scope (scope["state"]["request_id"]), the
    access log, and optionally a response header. Off by default."""

    enabled: bool = False
    """Give every HTTP request and WebSocket handshake a request id: the value of `header`
    when a trusted proxy (proxy.forwarded_allow_ips) sent one, else a new random one
    (32 hex digits)."""

    header: Annotated[str | None, AfterValidator(_check_header_name)] = "x-request-id"
    """The request header a trusted proxy puts the id in; "none": always make a new id.
    An id from an untrusted peer, or one longer than 128 characters or with characters
    other than visible ASCII, is replaced by a new one."""

    response_header: Annotated[str | None, AfterValidator(_check_header_name)] = None
    """Also send the id back in this response header (e.g. "x-request-id")."""


def _check_metrics_listener(value: str) -> str:
    if parse_bind_text(value, options=False).kind != "tcp":
        raise ValueError(f'{value!r}: the metrics listener is "host:port" or "[::1]:port"')
    return value


def _check_buckets(value: tuple[float, ...]) -> tuple[float, ...]:
    if not value:
        raise ValueError("give at least one bucket")
    if any(b <= 0 for b in value) or any(a >= b for a, b in itertools.pairwise(value)):
        raise ValueError("buckets are durations above 0, in increasing order")
    if len(value) > 40:
        raise ValueError("at most 40 buckets (each is a time series per protocol)")
    return value


class MetricsSection(Section):
    """Prometheus metrics on a listener of their own, one endpoint for all workers. Off by
    default; needs the prometheus_client package (pip install 'palfrey[metrics]')."""

    enabled: Annotated[bool, Flag("--metrics")] = False
    """Serve Prometheus metrics at http://<listener>/metrics."""

    listener: Annotated[str, AfterValidator(_check_metrics_listener)] = "127.0.0.1:9090"
    """The metrics listener, "host:port" (port 0: any free port, logged). Keep it off
    the app's listeners: Prometheus reaches it, clients do not."""

    buckets: Annotated[tuple[Seconds, ...], AfterValidator(_check_buckets)] = (
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    )
    """Upper bounds (seconds) of the request duration histogram's buckets; "250ms" and
    "2s" work too."""


class Config(Section):
    """Everything Palfrey needs to serve an app. Build it with palfrey.load_config()."""

    app: Annotated[str | None, AfterValidator(_check_import_string), Uvicorn("app")] = None
    """The ASGI app as an import string "module:attribute" (attributes may be dotted)."""

    factory: Annotated[bool, Uvicorn("factory")] = False
    """Treat app as a factory: call it with no arguments to get the ASGI app."""

    app_dir: Annotated[str, Uvicorn("app_dir")] = ""
    """Directory put first on sys.path before importing the app; "" is the current
    directory."""

    interface: Annotated[Literal["auto", "asgi3", "asgi2", "wsgi"], Uvicorn("interface")] = "auto"
    """Application interface; "auto" tells ASGI 3 from ASGI 2 by the app's signature."""

    env_file: Annotated[Path | None, Uvicorn("env_file")] = None
    """A dotenv file loaded into the environment before any other setting is read.
    Variables already set in the environment win."""

    server: ServerSection = ServerSection()
    http: HTTPSection = HTTPSection()
    http2: HTTP2Section = HTTP2Section()
    http3: HTTP3Section = HTTP3Section()
    websocket: WebSocketSection = WebSocketSection()
    tls: TLSSection = TLSSection()
    lifespan: LifespanSection = LifespanSection()
    proxy: ProxySection = ProxySection()
    limits: LimitsSection = LimitsSection()
    timeouts: TimeoutsSection = TimeoutsSection()
    workers: WorkersSection = WorkersSection()
    reload: ReloadSection = ReloadSection()
    logging: LoggingSection = LoggingSection()
    health: HealthSection = HealthSection()
    request_id: RequestIdSection = RequestIdSection()
    metrics: MetricsSection = MetricsSection()

    @model_validator(mode="after")
    def _no_contradictions(self, info: ValidationInfo) -> Config:
        if info.context and info.context.get("defer_contradictions"):
            return self
        problems = contradictions(self)
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
        return self


def contradictions(config: Config) -> list[tuple[tuple[str, ...], str]]:
    """Settings that are each valid but cannot hold together: (the keys involved, why)."""
    found: list[tuple[tuple[str, ...], str]] = []
    server = config.server

    def add(keys: tuple[str, ...], message: str) -> None:
        found.append((keys, message))

    if config.reload.enabled and config.workers.count > 1:
        add(
            ("reload.enabled", "workers.count"),
            "reload needs a single process: turn reload off or set workers.count to 1",
        )
    if server.uds is not None and server.fd is not None:
        add(("server.uds", "server.fd"), "choose one listener: server.uds or server.fd, not both")
    for key in ("uds", "fd"):
        if getattr(server, key) is not None and "port" in server.model_fields_set:
            add(
                (f"server.{key}", "server.port"),
                f"server.{key} replaces the TCP listener, so server.port has no effect: remove one",
            )
    if config.http3.enabled and not config.tls.enabled:
        add(("http3.enabled", "tls.certfile"), "HTTP/3 needs TLS: set tls.certfile and tls.keyfile")
    if config.tls.keyfile is not None and config.tls.certfile is None:
        add(("tls.keyfile", "tls.certfile"), "tls.keyfile needs tls.certfile")
    if config.tls.keyfile_password is not None and config.tls.keyfile_password_file is not None:
        add(
            ("tls.keyfile_password", "tls.keyfile_password_file"),
            "give the key password once: tls.keyfile_password or tls.keyfile_password_file",
        )
    if config.tls.cert_reqs != 0 and config.tls.ca_certs is None:
        add(
            ("tls.cert_reqs", "tls.ca_certs"),
            "verifying client certificates needs tls.ca_certs (the CA bundle to trust)",
        )
    logs = config.logging
    if logs.config is not None and logs.dict_config is not None:
        add(
            ("logging.config", "logging.dict_config"),
            "give one logging configuration: logging.config (a file) or logging.dict_config",
        )
    _access_contradictions(config, add)
    return found


def _access_contradictions(config: Config, add: Any) -> None:
    logs = config.logging
    own = "logging.config" if logs.config is not None else "logging.dict_config"
    if logs.config is not None or logs.dict_config is not None:
        for key in ("access_format", "access_destination", "access_atoms"):
            if key in logs.model_fields_set:
                add(
                    (f"logging.{key}", own),
                    f"with {own} the access line is your configuration's: set the "
                    "'access' formatter to palfrey.logging.AccessFormatter with "
                    "access_format (and access_atoms), and its handler to "
                    "palfrey.logging.AccessHandler with destination, instead of "
                    f"logging.{key}",
                )
    if (
        logs.access_format is not None
        and not config.request_id.enabled
        and re.search(r"%\(request_id\)", logs.access_format)
    ):
        add(
            ("logging.access_format", "request_id.enabled"),
            "the access format shows %(request_id)s: set request_id.enabled = true",
        )


SECTIONS: dict[str, type[Section]] = {
    name: field.annotation
    for name, field in Config.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
}
"""Section name -> section model, in declaration order."""
