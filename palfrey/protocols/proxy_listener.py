"""A listener whose connections start with a PROXY protocol header.

asyncio's own servers hand a connection to its protocol (and, for TLS, to the TLS layer)
as soon as it is accepted. The PROXY header comes before everything, TLS included, so
such a listener accepts connections itself, reads each header off the socket without
consuming a byte past it (peeking, then receiving exactly the header's bytes), checks the
peer, and only then gives the socket to asyncio (`loop.connect_accepted_socket`, with the
listener's SSLContext) with a protocol that sees the addresses the header named
(palfrey.transports.proxied).

Refusals (a missing, malformed, truncated or oversized header where one is required, a
header from a peer not in `proxy.forwarded_allow_ips`, a header that does not complete
within the head-read timeout) close the connection at once and never reach the app. Each
is logged at DEBUG; at most one WARNING a minute summarises them, so refusals cannot be
used to flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from palfrey.protocols.proxy_protocol import (
    MAX_V2_LENGTH,
    V1_MAX,
    ProxyHeaderError,
    ProxyInfo,
    parse,
    scan,
)
from palfrey.protocols.settings import ProxyProtocolSettings
from palfrey.transports.proxied import PROXY_EXTENSION, ProxiedTransport

__all__ = ["ProxyListener"]

logger = logging.getLogger("palfrey.error")

_PEEK = max(V1_MAX, 16 + MAX_V2_LENGTH)
_ACCEPTS_PER_WAKEUP = 64
_EMFILE_PAUSE = 1.0
_POLL_START, _POLL_MAX = 0.005, 0.2
_SUMMARY_EVERY = 60.0
_HANDSHAKE_TIMEOUT = 60.0  # asyncio's default for TLS servers

Trusted = Callable[[str | None], bool]


class ProxyListener:
    """Serves one listening socket whose connections begin with a PROXY header."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        settings: ProxyProtocolSettings,
        trusted: Trusted,
        ssl_context: ssl.SSLContext | None,
        header_timeout: float | None,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.settings = settings
        self.trusted = trusted
        self.ssl_context = ssl_context
        self.header_timeout = header_timeout
        self.loop = asyncio.get_running_loop()
        self._pending: set[_Pending] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._refused = 0
        self._last_summary = 0.0
        self._last_reason = ""

    # -- accepting -------------------------------------------------------------------

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting; connections still sending their header are closed."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for pending in list(self._pending):
            pending.close()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE/ENFILE) and the like: stop accepting for a
                # moment rather than spin on a readable listener (as asyncio does).
                logger.warning("Cannot accept connections for now: %s", exc)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(_EMFILE_PAUSE, self._resume_accepting)
                return
            conn.setblocking(False)
            _Pending(self, conn, _host(peer))

    def _resume_accepting(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    # -- after the header ----------------------------------------------------------------

    def hand_over(self, conn: socket.socket, info: ProxyInfo | None) -> None:
        task = self.loop.create_task(self._connect(conn, info))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, info: ProxyInfo | None) -> None:
        protocol = self.factory()
        extra: dict[str, Any] = {}
        if info is not None:
            extra[PROXY_EXTENSION] = info.extension()
            if info.proxied:
                extra["peername"] = info.source
                extra["sockname"] = info.destination
        try:
            await self.loop.connect_accepted_socket(
                lambda: _HandOver(protocol, extra),
                conn,
                ssl=self.ssl_context,
                ssl_handshake_timeout=_HANDSHAKE_TIMEOUT if self.ssl_context else None,
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            logger.debug("Connection closed during the TLS handshake: %s", exc)
            conn.close()

    def refuse(self, conn: socket.socket, peer: str | None, reason: str) -> None:
        conn.close()
        logger.debug("Refused a connection from %s: %s", peer or "a UNIX socket peer", reason)
        self._refused += 1
        self._last_reason = f"{reason} (from {peer or 'a UNIX socket peer'})"
        now = time.monotonic()
        if now - self._last_summary >= _SUMMARY_EVERY:
            logger.warning(
                "Refused %d connection(s) without an acceptable PROXY protocol header in the "
                "last minute; the latest: %s",
                self._refused,
                self._last_reason,
            )
            self._refused = 0
            self._last_summary = now


class _Pending:
    """One accepted connection whose PROXY header is still being read."""

    def __init__(self, listener: ProxyListener, conn: socket.socket, peer: str | None) -> None:
        self.listener = listener
        self.conn = conn
        self.peer = peer
        self.header = b""
        self.poll = _POLL_START
        self.timer: asyncio.TimerHandle | None = None
        self.waiting: asyncio.TimerHandle | None = None
        listener._pending.add(self)
        loop = listener.loop
        settings = listener.settings
        self.trusted = listener.trusted(peer)
        if not self.trusted and settings.mode != "auto":
            self.finish(refusal="the peer is not in proxy.forwarded_allow_ips")
            return
        if listener.header_timeout is not None:
            self.timer = loop.call_later(listener.header_timeout, self._expire)
        loop.add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.conn.recv(_PEEK - len(self.header), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.finish(refusal=f"connection error: {exc}")
            return
        if not data:
            if self.header:
                self.finish(refusal="closed in the middle of a PROXY header")
            else:
                # Connected and closed without a byte: a TCP health check, not an attack.
                logger.debug("A connection from %s closed without sending anything", self.peer)
                self.close()
            return
        try:
            self._advance(data)
        except ProxyHeaderError as exc:
            self.finish(refusal=str(exc))

    def _advance(self, data: bytes) -> None:
        settings = self.listener.settings
        seen = self.header + data
        result = scan(seen, versions=settings.versions)
        if result.absent:
            if self.header or settings.mode != "auto":
                raise ProxyHeaderError("no PROXY protocol header")
            self.finish(info=None)  # "auto": a connection without a header is served as is
            return
        if result.complete:
            self._take(result.length - len(self.header))
            info = parse(self.header)
            if not self.trusted:
                raise ProxyHeaderError("a PROXY header from a peer not in forwarded_allow_ips")
            self.finish(info=info)
        elif result.take:
            self._take(result.take - len(self.header))
        else:
            self._wait()  # too few bytes to tell, none of them ours to consume

    def _take(self, count: int) -> None:
        if count > 0:
            self.header += self.conn.recv(count)

    def _wait(self) -> None:
        # The bytes at hand must stay in the socket (they may be the request), so the
        # socket stays readable: poll with a growing delay instead of spinning.
        loop = self.listener.loop
        loop.remove_reader(self.conn.fileno())
        self.waiting = loop.call_later(self.poll, self._poll_again)
        self.poll = min(self.poll * 2, _POLL_MAX)

    def _poll_again(self) -> None:
        self.waiting = None
        self.listener.loop.add_reader(self.conn.fileno(), self._readable)

    def _expire(self) -> None:
        self.timer = None
        self.finish(refusal="the PROXY header did not arrive within timeouts.header_read")

    def finish(self, *, info: ProxyInfo | None = None, refusal: str | None = None) -> None:
        listener = self.listener
        self._stop_watching()
        listener._pending.discard(self)
        if refusal is not None:
            listener.refuse(self.conn, self.peer, refusal)
        else:
            listener.hand_over(self.conn, info)

    def close(self) -> None:
        self._stop_watching()
        self.listener._pending.discard(self)
        self.conn.close()

    def _stop_watching(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.listener.loop.remove_reader(self.conn.fileno())
        for handle in (self.timer, self.waiting):
            if handle is not None:
                handle.cancel()
        self.timer = self.waiting = None


class _HandOver(asyncio.Protocol):
    """The first protocol of a handed-over connection: it gives the real protocol the
    transport seen through the PROXY header, then steps aside."""

    def __init__(self, protocol: asyncio.Protocol, extra: dict[str, Any]) -> None:
        self.protocol = protocol
        self.extra = extra

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not registered as asyncio.Transport subclasses.)
        stream = cast(asyncio.Transport, transport)
        stream.set_protocol(self.protocol)
        seen = ProxiedTransport(stream, self.extra) if self.extra else stream
        self.protocol.connection_made(seen)


def _host(peer: Any) -> str | None:
    """The peer's address as TrustedProxies reads it; None for a UNIX socket peer."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None
