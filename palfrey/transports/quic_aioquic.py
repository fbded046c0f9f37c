"""QUIC endpoints on an asyncio datagram socket, with aioquic (RFC 9000).

`QuicEndpoint` is the DatagramProtocol of one UDP listener: it reads datagrams, answers
version negotiation and Retry, creates a connection for each new client Initial, and
routes every later datagram to its connection by destination connection ID. Each
connection is a `QuicSession`, which feeds aioquic, hands its events to the layer above
(HTTP/3, palfrey.protocols.http3_aioquic), sends what aioquic has to send and keeps its
timer on the event loop (aioquic's `get_timer()`).

Output is batched: a session that has something to send asks the endpoint for a flush,
and the endpoint flushes every such session once per loop turn, however many datagrams
arrived or streams wrote in that turn.

Connection IDs carry the worker slot (`Steering`): with several workers the supervisor's
reuseport BPF program (palfrey.workers.quic_steering) reads it to deliver every packet of
a connection to the process that holds it. `ServerQuic` is aioquic's connection with
those IDs, a concurrency limit on request streams, and receive credit that follows the
application rather than the network (see `_write_stream_limits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import (
    MAX_STREAM_DATA_FRAME_CAPACITY,
    NetworkAddress,
    QuicConnection,
    QuicConnectionId,
)
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from aioquic.tls import SessionTicket

__all__ = ["CID_LENGTH", "QuicEndpoint", "QuicSession", "ServerQuic", "Steering", "TicketStore"]

logger = logging.getLogger("palfrey.error")

CID_LENGTH = 8
"""Length of the connection IDs this server issues (aioquic's default)."""

_UNI_STREAMS = 16
"""Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK encoder
and decoder, RFC 9114 §6.2); the rest leaves room for grease streams."""

_TICKETS = 4096
"""Session tickets kept per process for 0-RTT (the oldest are forgotten first)."""


@dataclass(frozen=True)
class Steering:
    """How this process marks the connection IDs it issues: the first byte is its worker
    slot, the next two the slot XOR each byte of the 16-bit `marker`, so the supervisor's
    BPF program tells this server's IDs from the random ones clients choose for their
    first packets (a random ID passes for one of ours once in 65536). Five random bytes
    follow (RFC 9000 §5.1: IDs must not be linkable).

    Each ID's stateless reset token is derived from it with `reset_key` (RFC 9000
    §10.3.2), a secret every worker of a supervisor run shares: the worker that takes a
    dead one's slot can end that worker's connections with a Stateless Reset instead of
    leaving their clients to time out."""

    slot: int = 0
    marker: int = 0
    reset_key: bytes = field(default=b"", repr=False)

    def prefix(self) -> bytes:
        slot = self.slot
        return bytes((slot, slot ^ (self.marker >> 8 & 0xFF), slot ^ (self.marker & 0xFF)))

    def new_cid(self) -> bytes:
        return self.prefix() + os.urandom(CID_LENGTH - 3)

    def token(self, cid: bytes) -> bytes:
        """The stateless reset token of one of our connection IDs."""
        if not self.reset_key:
            return os.urandom(16)
        return hmac.new(self.reset_key, cid, hashlib.sha256).digest()[:16]

    def stateless_reset(self, dcid: bytes, size: int) -> bytes | None:
        """A Stateless Reset (RFC 9000 §10.3) for a short-header packet of `size` bytes to
        an ID of ours this process does not know, or None. Smaller than what it answers
        (§10.3.3: two servers cannot bounce resets forever) and at least 21 bytes."""
        if not self.reset_key or dcid[:3] != self.prefix() or size <= 21:
            return None
        length = min(size - 1, 41)
        random = bytearray(os.urandom(length - 16))
        random[0] = 0x40 | (random[0] & 0x3F)  # a short header's form and fixed bits
        return bytes(random) + self.token(dcid)


class TicketStore:
    """TLS session tickets for resumption and 0-RTT, bounded; each ticket is used once
    (RFC 8446 §8.1: single-use tickets stop a 0-RTT replay at this server)."""

    def __init__(self, size: int = _TICKETS) -> None:
        self.size = size
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > self.size:
            self._tickets.popitem(last=False)

    def pop(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)


class ServerQuic(QuicConnection):
    """aioquic's server connection with steered connection IDs, a stream concurrency
    limit, and request-stream credit returned only as the application consumes."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        steering: Steering,
        max_streams: int,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes | None = None,
        tickets: TicketStore | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            session_ticket_fetcher=None if tickets is None else tickets.pop,
            session_ticket_handler=None if tickets is None else tickets.add,
        )
        self.steering = steering
        cid = steering.new_cid()
        first = self._host_cids[0]
        first.cid = cid
        first.stateless_reset_token = steering.token(cid)
        self.host_cid = self._local_initial_source_connection_id = cid
        # RFC 9000 §4.6: the concurrency limit on request streams; aioquic grants one more
        # as each one ends. Sent in the transport parameters of the handshake.
        for limit, value in (
            (self._local_max_streams_bidi, max_streams),
            (self._local_max_streams_uni, _UNI_STREAMS),
        ):
            limit.value = limit.sent = value
        #: Request-stream bytes received but not yet consumed (the layer above sets it).
        self.held: Callable[[int], int] | None = None

    def _replenish_connection_ids(self) -> None:
        # aioquic's own, with IDs that carry this process's slot.
        while len(self._host_cids) < min(8, self._remote_active_connection_id_limit):
            cid = self.steering.new_cid()
            self._host_cids.append(
                QuicConnectionId(
                    cid=cid,
                    sequence_number=self._host_cid_seq,
                    stateless_reset_token=self.steering.token(cid),
                )
            )
            self._host_cid_seq += 1

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        """MAX_STREAM_DATA for request streams as the application consumes (RFC 9000
        §4.1): aioquic doubles a stream's window as data arrives, whether or not anyone
        reads it, which would let a client fill memory past a slow app. Credit is returned
        once half a window has been consumed, so a client reading at full speed never
        waits for it."""
        held = self.held
        sid = stream.stream_id
        if held is None or sid % 4 != 0:
            super()._write_stream_limits(builder, space, stream)
            return
        # This runs for every stream in every packet built: the common case (the request
        # has been received whole, nothing owed) returns at once.
        if not stream.receiver.is_finished:
            window = self._configuration.max_stream_data
            consumed = stream.receiver.highest_offset - held(sid)
            if consumed + window - stream.max_stream_data_local >= window >> 1:
                stream.max_stream_data_local = consumed + window
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def credit_due(self, stream_id: int) -> bool:
        """Whether consuming has freed enough of `stream_id`'s window to send credit."""
        stream = self._streams.get(stream_id)
        if stream is None or self.held is None or stream.receiver.is_finished:
            return False
        window = self._configuration.max_stream_data
        consumed = stream.receiver.highest_offset - self.held(stream_id)
        return bool(consumed + window - stream.max_stream_data_local >= window >> 1)

    def unacked(self, stream_id: int) -> int:
        """Response bytes of a stream written but not yet acknowledged by the client."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)

    def all_acked(self) -> bool:
        """Whether the client has acknowledged everything written on every stream (so a
        CONNECTION_CLOSE now loses nothing: aioquic sends no stream data once closing)."""
        for stream in self._streams.values():
            sender = stream.sender
            if sender._buffer_stop != sender._buffer_start and not sender.is_finished:
                return False
        return True

    @property
    def peer_address(self) -> NetworkAddress | None:
        """The client's address on the path in use (it changes with migration)."""
        paths = self._network_paths
        return paths[0].addr if paths else None


class QuicSession:
    """One QUIC connection: datagrams in, events up, datagrams out, one timer."""

    def __init__(self, quic: ServerQuic, endpoint: QuicEndpoint) -> None:
        self.quic = quic
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.closed = False
        #: The connection IDs the endpoint routes to this session.
        self.cids: set[bytes] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # -- for the layer above -------------------------------------------------------------

    def on_event(self, event: events.QuicEvent) -> None:
        """A QUIC event other than connection-ID bookkeeping (HTTP/3 overrides this)."""

    def on_terminated(self) -> None:
        """The connection has ended (closed by either side, idle, or aborted)."""

    def want_flush(self) -> None:
        """Send what aioquic has queued, once, on the next loop turn."""
        if not self.closed:
            self.endpoint.want_flush(self)

    # -- driven by the endpoint ----------------------------------------------------------

    def datagram(self, data: bytes, addr: NetworkAddress) -> None:
        self.quic.receive_datagram(data, addr, self.loop.time())
        self.process()

    def process(self) -> None:
        """Handle every event aioquic has produced, then flush."""
        quic = self.quic
        endpoint = self.endpoint
        event = quic.next_event()
        while event is not None:
            kind = type(event)
            if kind is events.ConnectionIdIssued:
                endpoint.route(event.connection_id, self)  # type: ignore[attr-defined]
            elif kind is events.ConnectionIdRetired:
                endpoint.unroute(event.connection_id, self)  # type: ignore[attr-defined]
            elif kind is events.ConnectionTerminated:
                self._terminated()
                return
            else:
                self.on_event(event)
            event = quic.next_event()
        self.want_flush()

    def flush(self) -> None:
        """Send every datagram aioquic has ready and re-arm the timer."""
        if self.closed:
            return
        quic = self.quic
        sendto = self.endpoint.sendto
        for data, addr in quic.datagrams_to_send(self.loop.time()):
            sendto(data, addr)
        self._arm(quic.get_timer())

    def _arm(self, when: float | None) -> None:
        # Lazy: a timer due later than the armed one is left for when that one fires
        # (aioquic's handle_timer is harmless when nothing is due), so the steady stream
        # of packets does not cancel and re-create a TimerHandle each.
        if when is None:
            return
        armed = self._timer_at
        if armed is not None and armed <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self.closed:
            return
        self.quic.handle_timer(self.loop.time())
        self.process()
        if not self.closed:
            self.flush()

    def close(self, error_code: int, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE, then aioquic's closing period)."""
        if not self.closed:
            self.quic.close(error_code=error_code, reason_phrase=reason)
            self.process()

    def abort(self, error_code: int = 0x102) -> None:
        """End the connection at once: one CONNECTION_CLOSE (H3_INTERNAL_ERROR unless
        told otherwise), then forget it (the process is stopping, or it failed)."""
        if not self.closed:
            with contextlib.suppress(Exception):  # a connection in an unknown state
                self.quic.close(error_code=error_code, reason_phrase="server stopping")
            self._terminated()

    def _terminated(self) -> None:
        if self.closed:
            return
        # What aioquic queued last (the CONNECTION_CLOSE) still goes out.
        with contextlib.suppress(Exception):  # after a failure, aioquic's state may not
            for data, addr in self.quic.datagrams_to_send(self.loop.time()):
                self.endpoint.sendto(data, addr)
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.endpoint.forget(self)
        self.on_terminated()


SessionFactory = Callable[[ServerQuic, "QuicEndpoint"], QuicSession]


class QuicEndpoint(asyncio.DatagramProtocol):
    """The DatagramProtocol of one UDP listener: connections by connection ID."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        session_factory: SessionFactory,
        steering: Steering,
        max_streams: int,
        retry: bool,
        tickets: TicketStore | None,
        accepting: Callable[[], bool],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.configuration = configuration
        self.session_factory = session_factory
        self.steering = steering
        self.max_streams = max_streams
        self.retry = QuicRetryTokenHandler() if retry else None
        self.tickets = tickets
        self.accepting = accepting
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[bytes, QuicSession] = {}
        self.live: set[QuicSession] = set()
        self._dirty: list[QuicSession] = []
        self.closed = asyncio.Event()

    # -- asyncio.DatagramProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for session in list(self.live):
            session.abort()
        self.closed.set()

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors (a client gone away): its connection times out by itself

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return  # not QUIC
        session = self.sessions.get(header.destination_cid)
        if session is not None:
            self._feed(session, data, addr)
            return
        version = header.version
        supported = self.configuration.supported_versions
        if version is not None and version not in supported:
            # RFC 9000 §6: answer an unknown version, but never a Version Negotiation
            # packet itself (version 0): two servers would answer each other forever.
            if header.packet_type != QuicPacketType.VERSION_NEGOTIATION:
                self.sendto(
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid,
                        destination_cid=header.source_cid,
                        supported_versions=supported,
                    ),
                    addr,
                )
            return
        if version is None:
            # A short-header packet of a connection this process does not hold: one of a
            # worker that died in this slot, or of before a restart (RFC 9000 §10.3).
            reset = self.steering.stateless_reset(header.destination_cid, len(data))
            if reset is not None:
                self.sendto(reset, addr)
            return
        # RFC 9000 §14.1: a client's first datagram is at least 1200 bytes, which bounds
        # the amplification an address spoofer gets from us.
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return
        if not self.accepting():
            return  # shutting down: the client's retransmission finds another server
        self._new_connection(data, addr, header)

    def _new_connection(self, data: bytes, addr: NetworkAddress, header: Any) -> None:
        odcid: bytes = header.destination_cid
        retry_scid = None
        retry = self.retry
        if retry is not None:
            # RFC 9000 §8.1.2: prove the address with a token before any handshake work.
            if not header.token:
                scid = self.steering.new_cid()
                token = retry.create_token(
                    address=addr,
                    original_destination_connection_id=header.destination_cid,
                    retry_source_connection_id=scid,
                    now=self.loop.time(),
                )
                packet = encode_quic_retry(
                    version=header.version,
                    source_cid=scid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=token,
                )
                self.sendto(packet, addr)
                return
            try:
                odcid = retry.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=self.loop.time(),
                )
            except ValueError:
                return  # not ours, for another address, or expired: the client times out
            retry_scid = header.destination_cid
        quic = ServerQuic(
            configuration=self.configuration,
            steering=self.steering,
            max_streams=self.max_streams,
            original_destination_connection_id=odcid,
            retry_source_connection_id=retry_scid,
            tickets=self.tickets,
        )
        session = self.session_factory(quic, self)
        self.live.add(session)
        self.route(header.destination_cid, session)
        self.route(quic.host_cid, session)
        self._feed(session, data, addr)

    def _feed(self, session: QuicSession, data: bytes, addr: NetworkAddress) -> None:
        try:
            session.datagram(data, addr)
        except Exception:
            # A bug must cost one connection, not the listener: asyncio would log the
            # exception and leave this connection half-processed for every later datagram.
            logger.exception("HTTP/3 connection failed; closing it")
            session.abort()

    # -- for sessions ----------------------------------------------------------------------

    def sendto(self, data: bytes, addr: NetworkAddress) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr)

    def want_flush(self, session: QuicSession) -> None:
        dirty = self._dirty
        if not dirty:
            self.loop.call_soon(self._flush)
        dirty.append(session)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for session in dict.fromkeys(dirty):
            session.flush()

    def route(self, cid: bytes, session: QuicSession) -> None:
        self.sessions[cid] = session
        session.cids.add(cid)

    def unroute(self, cid: bytes, session: QuicSession) -> None:
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
        session.cids.discard(cid)

    def forget(self, session: QuicSession) -> None:
        self.live.discard(session)
        for cid in session.cids:
            if self.sessions.get(cid) is session:
                del self.sessions[cid]
        session.cids.clear()

    def close(self) -> None:
        """Stop reading: every connection left is forgotten."""
        if self.transport is not None:
            self.transport.close()
