"""WebSocket framing on the websockets library's sans-IO protocol.

`websockets.protocol.Protocol` (server side, created already OPEN: the opening handshake
is Palfrey's) parses frames, answers pings and close frames, validates close codes and
enforces `max_size` (including inside permessage-deflate, where it bounds decompression).
It does not assemble messages or check UTF-8, so that happens here: a fragmented text
message is decoded fragment by fragment, failing as soon as a byte is invalid
(RFC 6455 §8.1), as the wsproto backend does.
"""

from __future__ import annotations

import codecs
import logging
from typing import Any, cast

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Protocol

from palfrey.protocols.websocket_core import (
    ABNORMAL,
    DEFLATE_MEM_LEVEL,
    INVALID_DATA,
    Deflate,
    EngineSink,
)
from palfrey.protocols.websocket_frames import frame_extent, is_plain, plain_message

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_PING = Opcode.PING
_PONG = Opcode.PONG
_CLOSE = Opcode.CLOSE
_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# websockets logs every closed connection at INFO on this logger; Palfrey has its own.
_logger = logging.getLogger("palfrey.websockets")
_logger.propagate = False
_logger.addHandler(logging.NullHandler())


class _ServerProtocol(Protocol):
    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is _CLOSE:
            # RFC 6455 §5.4: control frames may come between the fragments of a message,
            # and a close ends the connection: the unfinished message is dropped, not a
            # protocol error (websockets fails it with 1002; wsproto and Autobahn 7.1.5
            # expect the normal closing handshake).
            self.current_size = None
        super().recv_frame(frame)


class WebsocketsEngine:
    """One server-side connection's framing (see `websocket_core.Engine`)."""

    __slots__ = (
        "_buffer",
        "_decoder",
        "_extensions",
        "_max_size",
        "_parts",
        "_plain",
        "_proto",
        "_text",
        "done",
        "sink",
    )

    def __init__(self, sink: EngineSink, *, max_size: int, deflate: Deflate | None) -> None:
        proto = self._proto = _ServerProtocol(SERVER, state=OPEN, max_size=max_size, logger=_logger)
        if deflate is not None:
            proto.extensions = [
                PerMessageDeflate(
                    remote_no_context_takeover=deflate.client_no_context_takeover,
                    local_no_context_takeover=deflate.server_no_context_takeover,
                    remote_max_window_bits=deflate.client_max_window_bits or 15,
                    local_max_window_bits=deflate.server_max_window_bits,
                    compress_settings={"memLevel": DEFLATE_MEM_LEVEL},
                )
            ]
        self._extensions = proto.extensions
        self._plain = deflate is None  # no extension: data frames may be read here
        self._max_size = max_size
        self._buffer = b""  # the start of a frame still arriving
        self.sink = sink
        self._parts: list[Any] = []
        self._text = False
        self._decoder: codecs.IncrementalDecoder | None = None
        self.done = False

    def receive(self, data: bytes) -> None:
        """Split the stream into whole frames: a whole plain text or binary frame (see
        `websocket_frames`) is unmasked and delivered here; every other frame goes to
        the library whole, so its parser always stops at a frame boundary and its state
        (fragmentation, closing) stays exact."""
        if self.done:
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        end = len(data)
        pos = 0
        proto = self._proto
        while pos < end:
            extent = frame_extent(data, pos, end)
            if extent is None:
                break
            start, length = extent
            current = proto.current_size
            limit = self._max_size if current is None else self._max_size - current
            if length > limit:
                # Too big: the library refuses it from its header alone (close 1009),
                # before the payload arrives.
                self._library(data[pos:])
                return
            stop = start + length
            if stop > end:
                break
            if current is None and self._plain and is_plain(data, pos):
                message = plain_message(data, pos, start, stop)
                if message is None:
                    self._invalid_utf8()
                    return
                self.sink.message(message)
            else:
                self._library(data[pos:stop])
                if self.done:
                    return
            pos = stop
        if pos < end:
            self._buffer = data[pos:]

    def _library(self, data: bytes) -> None:
        """Frames for the library's parser: control frames, fragments, compressed or
        malformed frames."""
        proto = self._proto
        proto.receive_data(data)
        frames = cast("list[Frame]", proto.events_received())
        sink = self.sink
        for chunk in proto.data_to_send():  # pongs and the close reply
            if chunk:
                sink.write(chunk)
        for frame in frames:
            opcode = frame.opcode
            if opcode is _TEXT:
                if frame.fin:
                    try:
                        text = bytes(frame.data).decode("utf-8")
                    except UnicodeDecodeError:
                        self._invalid_utf8()
                        return
                    sink.message(text)
                else:
                    self._text = True
                    self._decoder = _utf8_decoder()
                    if not self._fragment(frame):
                        return
            elif opcode is _BINARY:
                if frame.fin:
                    sink.message(bytes(frame.data))
                else:
                    self._text = False
                    self._fragment(frame)
            elif opcode is _CONT:
                if not self._fragment(frame):
                    return
            elif opcode is _PONG:
                sink.pong()
            elif opcode is _CLOSE:
                self.done = True
                close = proto.close_rcvd
                assert close is not None
                sink.closed(int(close.code), close.reason)
                return
        if proto.parser_exc is not None:
            # The protocol failed the connection and wrote the close frame (RFC 6455 §7.1.7).
            self.done = True
            sent = proto.close_sent
            code = int(sent.code) if sent is not None else ABNORMAL
            sink.failed(code, sent.reason if sent is not None else "")

    def _fragment(self, frame: Frame) -> bool:
        """Add a fragment; deliver the message on the last one. False: failed."""
        data: Any = frame.data
        if self._text:
            assert self._decoder is not None
            try:
                data = self._decoder.decode(data, frame.fin)
            except UnicodeDecodeError:
                self._invalid_utf8()
                return False
        self._parts.append(data)
        if frame.fin:
            parts, self._parts = self._parts, []
            self.sink.message("".join(parts) if self._text else b"".join(parts))
        return True

    def _invalid_utf8(self) -> None:
        # RFC 6455 §8.1: invalid UTF-8 in a text message fails the connection with 1007.
        self.done = True
        proto = self._proto
        proto.fail(INVALID_DATA, "invalid UTF-8")
        for chunk in proto.data_to_send():
            if chunk:
                self.sink.write(chunk)
        self.sink.failed(INVALID_DATA, "invalid UTF-8")

    def text(self, data: str) -> bytes:
        return Frame(_TEXT, data.encode("utf-8")).serialize(mask=False, extensions=self._extensions)

    def binary(self, data: bytes) -> bytes:
        return Frame(_BINARY, data).serialize(mask=False, extensions=self._extensions)

    def ping(self, payload: bytes) -> bytes:
        return Frame(_PING, payload).serialize(mask=False, extensions=self._extensions)

    def close(self, code: int, reason: str) -> bytes:
        proto = self._proto
        if proto.state is OPEN:
            proto.send_close(code, _truncate(reason))
        return b"".join(proto.data_to_send())


def _truncate(reason: str) -> str:
    # RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
    data = reason.encode("utf-8")
    if len(data) <= 123:
        return reason
    return data[:123].decode("utf-8", "ignore")


ENGINE = WebsocketsEngine
