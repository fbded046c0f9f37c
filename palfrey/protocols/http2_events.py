"""The events of an HTTP/2 server connection (`http2_connection.ServerConnection.receive`
returns them in order): what the application side needs to know, nothing more."""

from __future__ import annotations

from palfrey.protocols.http2_fields import Request

__all__ = [
    "ConnectionTerminated",
    "DataReceived",
    "Event",
    "PingAcked",
    "RequestReceived",
    "StreamDrained",
    "StreamReset",
]


class RequestReceived:
    """A checked request HEADERS block opened a stream (`ended`: END_STREAM with it)."""

    __slots__ = ("ended", "request", "stream_id")

    def __init__(self, stream_id: int, request: Request, ended: bool) -> None:
        self.stream_id = stream_id
        self.request = request
        self.ended = ended


class DataReceived:
    """Request body bytes (padding removed); `ended` when END_STREAM came with them or
    with a trailer section (trailers are checked and dropped: ASGI has none)."""

    __slots__ = ("data", "ended", "stream_id")

    def __init__(self, stream_id: int, data: bytes, ended: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.ended = ended


class StreamReset:
    """A stream ended abnormally: reset by the client (`remote`) or by a stream error."""

    __slots__ = ("code", "remote", "stream_id")

    def __init__(self, stream_id: int, code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.code = code
        self.remote = remote


class StreamDrained:
    """Response data that waited for flow-control credit has all been sent."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class PingAcked:
    """The answer to our PING."""

    __slots__ = ()


class ConnectionTerminated:
    """GOAWAY: received (`remote`), or sent for a connection error; the last event."""

    __slots__ = ("code", "last_stream_id", "remote")

    def __init__(self, code: int, last_stream_id: int, remote: bool) -> None:
        self.code = code
        self.last_stream_id = last_stream_id
        self.remote = remote


Event = (
    RequestReceived | DataReceived | StreamReset | StreamDrained | PingAcked | ConnectionTerminated
)
