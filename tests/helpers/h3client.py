"""An HTTP/3 client for tests: aioquic's QuicConnectionProtocol with H3Connection, an
engine independent of the server's use of aioquic (its client side). Every wait has a
timeout.

    async with h3_connect(port, cafile) as client:
        response = await client.request("GET", "/")
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamReset

TIMEOUT = 10.0


@dataclass
class H3Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    interim: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    head: asyncio.Event = field(default_factory=asyncio.Event)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses: dict[int, H3Response] = {}
        self.terminated: ConnectionTerminated | None = None
        self.handshake: HandshakeCompleted | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            for response in self.responses.values():
                response.done.set()
        if isinstance(event, StreamReset):
            response = self.responses.get(event.stream_id)
            if response is not None:
                response.reset = event.error_code
                response.done.set()
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        sid = getattr(event, "stream_id", None)
        response = self.responses.get(sid) if sid is not None else None
        if response is None:
            return
        if isinstance(event, HeadersReceived):
            status = int(dict(event.headers).get(b":status", b"0"))
            fields = [(n, v) for n, v in event.headers if not n.startswith(b":")]
            if response.status and not 100 <= status < 200:
                response.trailers = list(event.headers)
            elif 100 <= status < 200:
                response.interim.append(list(event.headers))
            else:
                response.status = status
                response.headers = fields
                response.head.set()
        elif isinstance(event, DataReceived):
            response.body += event.data
            response.received.set()
        if getattr(event, "stream_ended", False):
            response.ended = True
            response.done.set()

    def start(
        self,
        method: str,
        path: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        end: bool = True,
        authority: bytes = b"localhost",
    ) -> int:
        sid = self._quic.get_next_available_stream_id()
        self.responses[sid] = H3Response()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.h3.send_headers(sid, fields, end_stream=end and not body)
        if body:
            self.h3.send_data(sid, body, end_stream=end)
        self.transmit()
        return sid

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        timeout: float = TIMEOUT,
    ) -> H3Response:
        sid = self.start(method, path, headers=headers, body=body)
        response = self.responses[sid]
        await asyncio.wait_for(response.done.wait(), timeout)
        return response

    def cancel(self, sid: int, code: int = 0x10C) -> None:
        """H3_REQUEST_CANCELLED both ways (RFC 9114 §4.1.1)."""
        self._quic.stop_stream(sid, code)
        self._quic.reset_stream(sid, code)
        self.transmit()


def client_configuration(cafile: str | None) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    if cafile is None:
        configuration.verify_mode = ssl.CERT_NONE
    else:
        configuration.load_verify_locations(cafile)
    configuration.server_name = "localhost"
    return configuration


@contextlib.asynccontextmanager
async def h3_connect(
    port: int, cafile: str | None = None, host: str = "127.0.0.1", timeout: float = TIMEOUT
) -> AsyncIterator[H3Client]:
    """An established HTTP/3 connection to host:port (UDP)."""
    configuration = client_configuration(cafile)
    manager = connect(host, port, configuration=configuration, create_protocol=H3Client)
    client: H3Client = await asyncio.wait_for(manager.__aenter__(), timeout)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(manager.__aexit__(None, None, None), timeout)
