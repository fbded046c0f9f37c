"""Choosing HTTP/1.1 or HTTP/2 for each connection of a listener that serves both.

- TLS: the ALPN protocol the handshake selected (RFC 9113 §3.2): "h2" gets HTTP/2,
  anything else (or no ALPN) HTTP/1.1. Decided in `connection_made`, no bytes read.
- Cleartext, prior knowledge (RFC 9113 §3.3): a connection whose first bytes are the
  client preface `PRI * HTTP/2.0...` gets HTTP/2. So does one whose first line is
  neither that nor an HTTP/1.x request line (it does not end in an `HTTP/` version):
  it speaks neither protocol, and HTTP/2 answers it as an invalid preface, GOAWAY
  PROTOCOL_ERROR (§3.4). Anything with an HTTP/1 request line goes to HTTP/1.1, which
  answers a malformed one with its 4xx.
- Cleartext, `Upgrade: h2c` (RFC 7540 §3.2; deprecated by RFC 9113 §3.1 but still sent
  by curl and others): the first request of a connection that asks for it, with a valid
  `HTTP2-Settings`, is read in full (body included, up to `_UPGRADE_BODY_LIMIT`), answered
  with `101 Switching Protocols`, and becomes stream 1 of an HTTP/2 connection. A larger
  body or a malformed request is left to HTTP/1.1, which ignores the Upgrade (RFC 9110
  §7.8), as does any later request asking for it.

The switch is explicit: the `Negotiator` is the transport's protocol only until the
first request head is complete, then it hands the transport to the chosen protocol with
`transport.set_protocol` and replays what it read. An HTTP/1.1 connection therefore pays
for negotiation once, on its first bytes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11

from palfrey.protocols.http2_asyncio import HTTP2Protocol, Upgrade
from palfrey.protocols.http2_fields import decode_settings
from palfrey.protocols.http2_frames import PREFACE
from palfrey.protocols.settings import HTTP2Settings, WebSocketSettings
from palfrey.protocols.tokens import field_has_token

if TYPE_CHECKING:
    from palfrey.protocols.context import ConnectionContext

__all__ = ["Negotiator", "negotiating"]

ProtocolFactory = Callable[["ConnectionContext"], asyncio.Protocol]

_UPGRADE_BODY_LIMIT = 1 << 20
# A quick look for an Upgrade field naming h2c anywhere in its list, in a complete head;
# the request is parsed properly (with h11, Connection and Upgrade read as token lists by
# `_settings_field`) only when this matches.
_H2C = re.compile(rb"\r\nupgrade[ \t]*:[^\r\n]*h2c", re.IGNORECASE).search
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"


def negotiating(
    settings: HTTP2Settings, websocket: WebSocketSettings | None, http1: ProtocolFactory
) -> ProtocolFactory:
    """A protocol factory serving HTTP/1.1 (`http1`) and HTTP/2 on one listener; HTTP/2
    streams carry WebSockets (RFC 8441) when `websocket` is set."""

    def make(ctx: ConnectionContext) -> asyncio.Protocol:
        return Negotiator(ctx, http1, settings, websocket)

    return make


class Negotiator(asyncio.Protocol):
    """The protocol of a new connection until it is known which HTTP version it speaks."""

    def __init__(
        self,
        ctx: ConnectionContext,
        http1: ProtocolFactory,
        settings: HTTP2Settings,
        websocket: WebSocketSettings | None = None,
    ) -> None:
        self.ctx = ctx
        self.http1 = http1
        self.settings = settings
        self.websocket = websocket
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self._upgrade: _UpgradeReader | None = None
        self._done = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            # RFC 9113 §3.2: over TLS the version is what ALPN selected.
            if ssl_object.selected_alpn_protocol() == "h2":
                self._switch(self._http2())
            else:
                self._switch(self.http1(self.ctx))
            return
        self.ctx.state.connections.add(self)
        if self.ctx.state.shutting_down:
            self._abandon()
            return
        timeout = self.ctx.limits.header_read
        if timeout is not None:
            # A silent connection is bounded as HTTP/1.1 bounds a slow head (slowloris).
            self._timer = asyncio.get_running_loop().call_later(timeout, self._abandon)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if self._upgrade is not None:
            self._feed_upgrade(data)
            return
        buf = self._buf + data if self._buf else data
        if buf[:24] == PREFACE[: len(buf)]:
            if len(buf) < len(PREFACE):
                self._buf = buf  # part of the preface: wait for the rest
                return
            self._switch(self._http2(), buf)  # RFC 9113 §3.3: prior knowledge
            return
        if _neither(buf):
            self._switch(self._http2(), buf)  # RFC 9113 §3.4: an invalid preface
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) < self.ctx.limits.max_head_size:
            self._buf = buf  # the first head is incomplete: the Upgrade may follow
            return
        if end >= 0 and _H2C(buf, 0, end + 2) is not None:
            self._buf = b""
            self._upgrade = _UpgradeReader(buf)
            self._feed_upgrade(b"")
            return
        self._switch(self.http1(self.ctx), buf)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self._cancel_timer()
        self.ctx.state.connections.discard(self)

    def eof_received(self) -> bool | None:
        return None

    # -- graceful shutdown (the Server calls these on every connection) ------------------

    def shutdown(self) -> None:
        if not self._done:
            self._abandon()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.transport.abort()

    # -- switching -----------------------------------------------------------------------

    def _http2(self, upgrade: Upgrade | None = None) -> HTTP2Protocol:
        return HTTP2Protocol(self.ctx, self.settings, upgrade=upgrade, websocket=self.websocket)

    def _switch(self, protocol: asyncio.Protocol, replay: bytes = b"") -> None:
        self._done = True
        self._cancel_timer()
        self.ctx.state.connections.discard(self)
        transport = self.transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if replay and not transport.is_closing():
            protocol.data_received(replay)

    def _feed_upgrade(self, data: bytes) -> None:
        reader = self._upgrade
        assert reader is not None
        outcome = reader.feed(data)
        if outcome is None:
            return  # the body is still arriving
        if isinstance(outcome, Upgrade):
            self.transport.write(_SWITCHING)
            self._switch(self._http2(outcome))
        else:
            # Not an upgrade we take: HTTP/1.1 serves it from the first byte.
            self._switch(self.http1(self.ctx), outcome)

    def _abandon(self) -> None:
        self._done = True
        self._cancel_timer()
        self.ctx.state.connections.discard(self)
        self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _UpgradeReader:
    """Reads the one HTTP/1.1 request that asked for h2c, body included (RFC 7540 §3.2:
    the body is sent in full before any HTTP/2 frame)."""

    def __init__(self, first: bytes) -> None:
        self.raw = first
        self.conn = h11.Connection(h11.SERVER)
        self.request: h11.Request | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.pending = first

    def feed(self, data: bytes) -> Upgrade | bytes | None:
        """The Upgrade once the request is complete; the raw bytes to give HTTP/1.1 when
        the request is not one to upgrade; None while more is needed."""
        if data:
            self.raw += data
            self.pending += data
        try:
            return self._events()
        except h11.RemoteProtocolError:
            return self.raw

    def _events(self) -> Upgrade | bytes | None:
        conn = self.conn
        conn.receive_data(self.pending)
        self.pending = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Request):
                self.request = event
                if _settings_field(event.headers) is None:
                    return self.raw
            elif isinstance(event, h11.Data):
                self.size += len(event.data)
                if self.size > _UPGRADE_BODY_LIMIT:
                    return self.raw
                self.body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return self._upgrade()
            else:
                return self.raw

    def _upgrade(self) -> Upgrade | bytes:
        request = self.request
        assert request is not None
        settings = _settings_field(request.headers)
        if settings is None:
            return self.raw
        rest = self.conn.trailing_data[0]
        return Upgrade(
            method=request.method,
            target=request.target,
            headers=[(bytes(n), bytes(v)) for n, v in request.headers],
            body=b"".join(self.body),
            settings=settings,
            rest=bytes(rest),
        )


def _neither(buf: bytes) -> bool:
    """Whether the first line has arrived and is neither the HTTP/2 preface's nor an
    HTTP/1.x request line, whose last word is the version (RFC 9112 §3)."""
    if buf.startswith(PREFACE[:16]):  # "PRI * HTTP/2.0\r\n": a preface gone wrong
        return True
    start = len(buf) - len(buf.lstrip(b"\r\n"))  # empty lines before a request (§2.2)
    end = buf.find(b"\n", start)
    if end < 0:
        return False
    line = buf[start:end].rstrip(b"\r")
    return not line.rpartition(b" ")[2].startswith(b"HTTP/")


def _settings_field(headers: Any) -> bytes | None:
    """The HTTP2-Settings value of a request that validly asks for h2c, else None."""
    fields = [(bytes(name), bytes(value)) for name, value in headers]
    settings = [value for name, value in fields if name == b"http2-settings"]
    # RFC 7540 §3.2: Upgrade lists h2c, Connection lists both Upgrade and HTTP2-Settings
    # (token lists, read as everywhere else: `limits.tokens`).
    if (
        len(settings) != 1
        or not field_has_token(fields, b"upgrade", b"h2c")
        or not field_has_token(fields, b"connection", b"upgrade")
        or not field_has_token(fields, b"connection", b"http2-settings")
    ):
        return None
    return settings[0] if decode_settings(settings[0]) is not None else None
