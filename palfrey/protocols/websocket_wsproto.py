"""WebSocket framing on wsproto's frame layer.

wsproto's `FrameProtocol` (framing, masking, UTF-8 checks, close-frame validation and
its permessage-deflate) is used directly, without `WSConnection`: the opening handshake
is Palfrey's (`websocket_core`), so the event-object layer above the frames would only
cost time on every message. wsproto yields a frame's payload as it arrives, which is how
text is validated while a message is still arriving (RFC 6455 §8.1 "fail fast") and how
`max_size` holds for messages of any fragment count.
"""

from __future__ import annotations

import zlib
from typing import Any, cast

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    ParseFailed,
    RsvBits,
    XorMaskerSimple,
)

from palfrey.protocols.websocket_core import (
    DEFLATE_MEM_LEVEL,
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    Deflate,
    EngineSink,
)
from palfrey.protocols.websocket_frames import (
    apply_mask,
    frame_extent,
    is_plain,
    plain_message,
)

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_PING = Opcode.PING
_PONG = Opcode.PONG
_CLOSE = Opcode.CLOSE
_TAIL = b"\x00\x00\xff\xff"


class _FastMasker:
    """RFC 6455 §5.3 unmasking of a frame's payload, which may arrive in pieces: the key
    is rotated by each piece's length, as wsproto's `XorMaskerSimple` does. Returns bytes
    so wsproto does not copy the payload again into its frame."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | bytearray) -> None:
        self._key = bytes(key)

    def process(self, data: bytes | bytearray) -> bytes:
        length = len(data)
        if not length:
            return b""
        key = self._key
        out = apply_mask(data, key)
        rotation = length % 4
        if rotation:
            self._key = key[rotation:] + key[:rotation]
        return out


class _FastFrameDecoder(FrameDecoder):
    """wsproto's frame decoder with a faster unmasker (the per-byte work on every
    received byte); everything else is wsproto's."""

    def parse_header(self) -> bool:
        if not super().parse_header():
            return False
        masker = self.masker
        if type(masker) is XorMaskerSimple:
            self.masker = _FastMasker(masker._masking_key)  # type: ignore[assignment]
        return True


class _BoundedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate with decompression bounded by `max_size`: a small
    compressed frame must not inflate into gigabytes before the size check sees it."""

    def __init__(self, max_size: int, deflate: Deflate) -> None:
        client_bits = deflate.client_max_window_bits
        super().__init__(
            client_no_context_takeover=deflate.client_no_context_takeover,
            # RFC 7692 §7.1.2.2: a decompressor with a 15-bit window reads any smaller one.
            client_max_window_bits=client_bits if client_bits and client_bits >= 9 else None,
            server_no_context_takeover=deflate.server_no_context_takeover,
            server_max_window_bits=deflate.server_max_window_bits,
        )
        self._enabled = True
        self.limit = max_size + 1

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if self._compressor is None and opcode is not Opcode.CONTINUATION:
            # wsproto's compressor with Palfrey's memory level (see DEFLATE_MEM_LEVEL).
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION,
                zlib.DEFLATED,
                -int(self.server_max_window_bits),
                DEFLATE_MEM_LEVEL,
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    def frame_inbound_payload_data(self, proto: object, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        try:
            out = self._decompressor.decompress(data, self.limit)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: object, fin: bool) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible or not self._inbound_compressed:
            if fin:
                self._inbound_compressed = None
            return None
        assert self._decompressor is not None
        try:
            # RFC 7692 §7.2.2: append the empty stored block the sender removed.
            data = self._decompressor.decompress(_TAIL, self.limit)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        if self.client_no_context_takeover:  # §7.1.1.2
            self._decompressor = None
        self._inbound_compressed = None
        return data


class WsprotoEngine:
    """One server-side connection's framing (see `websocket_core.Engine`)."""

    __slots__ = (
        "_close_sent",
        "_decoder",
        "_messages",
        "_parts",
        "_plain",
        "_proto",
        "_size",
        "done",
        "max_size",
        "sink",
    )

    def __init__(self, sink: EngineSink, *, max_size: int, deflate: Deflate | None) -> None:
        extensions: list[Extension] = []
        if deflate is not None:
            extensions.append(_BoundedDeflate(max_size, deflate))
        self._proto = FrameProtocol(client=False, extensions=extensions)
        self._decoder = self._proto._frame_decoder
        self._decoder.__class__ = _FastFrameDecoder
        self._messages = self._proto._message_decoder
        self._plain = deflate is None  # no extension: data frames may be read here
        self.sink = sink
        self.max_size = max_size
        self._parts: list[str] | list[bytes] = []
        self._size = 0
        self._close_sent = False
        self.done = False

    def receive(self, data: bytes) -> None:
        if self.done:
            return
        decoder = self._decoder
        if (
            self._plain
            and decoder.header is None
            and not self._parts
            and not len(decoder.buffer)
            and self._messages.opcode is None
        ):
            # wsproto is between frames and messages: whole plain text or binary frames
            # (see `websocket_frames`) are unmasked and delivered here; wsproto takes
            # over from the first frame that is anything else or not whole yet.
            data = self._plain_frames(data)
            if not data or self.done:
                return
        proto = self._proto
        sink = self.sink
        proto.receive_bytes(data)
        try:
            for frame in proto.received_frames():
                opcode = frame.opcode
                if opcode is _TEXT or opcode is _BINARY:
                    payload: Any = frame.payload
                    if frame.message_finished and not self._parts:
                        # Characters never outnumber UTF-8 bytes four to one, so only a
                        # large message needs measuring.
                        limit = self.max_size
                        if len(payload) * 4 > limit and _byte_length(payload) > limit:
                            self._fail(MESSAGE_TOO_BIG, "message too big")
                            return
                        sink.message(payload)
                    else:
                        self._fragment(payload, frame.message_finished)
                        if self.done:
                            return
                elif opcode is _PING:
                    # RFC 6455 §5.5.2: answer with the same application data.
                    sink.write(bytes(proto.pong(frame.payload)))  # type: ignore[arg-type]
                elif opcode is _PONG:
                    sink.pong()
                elif opcode is _CLOSE:
                    self.done = True
                    code, reason = cast("tuple[int, str]", frame.payload)
                    if not self._close_sent:
                        # RFC 6455 §5.5.1: reply with a close frame echoing the code.
                        self._close_sent = True
                        sink.write(bytes(proto.close(code, reason)))
                    sink.closed(int(code), reason)
                    return
        except ParseFailed as exc:
            self._fail(int(exc.code), str(exc))
            return
        header = self._decoder.header
        if header is not None and not header.opcode.iscontrol():
            # A frame still arriving: refuse it as soon as its declared length shows the
            # message will not fit (the websockets backend checks the same way).
            remaining = header.payload_len - self._decoder.payload_consumed
            if self._size + remaining > self.max_size:
                self._fail(MESSAGE_TOO_BIG, "message too big")

    def _plain_frames(self, data: bytes) -> bytes:
        """Deliver the whole plain frames at the start of `data`; return the rest."""
        end = len(data)
        pos = 0
        while pos < end:
            extent = frame_extent(data, pos, end)
            if extent is None:
                break
            start, length = extent
            stop = start + length
            if stop > end or length > self.max_size or not is_plain(data, pos):
                break
            message = plain_message(data, pos, start, stop)
            if message is None:
                self._fail(INVALID_DATA, "invalid UTF-8")
                return b""
            self.sink.message(message)
            pos = stop
        return data[pos:] if pos else data

    def _fragment(self, payload: str | bytes, finished: bool) -> None:
        size = self._size + _byte_length(payload)
        if size > self.max_size:
            self._fail(MESSAGE_TOO_BIG, "message too big")
            return
        self._size = size
        self._parts.append(payload)  # type: ignore[arg-type]
        if finished:
            parts, self._parts, self._size = self._parts, [], 0
            joined = "".join(parts) if isinstance(payload, str) else b"".join(parts)  # type: ignore[arg-type]
            self.sink.message(joined)

    def _fail(self, code: int, reason: str) -> None:
        self.done = True
        if code == INVALID_DATA:
            reason = "invalid UTF-8"
        self.sink.write(self.close(code, reason))
        self.sink.failed(code, reason)

    def text(self, data: str) -> bytes:
        return self._proto.send_data(data, True)  # type: ignore[return-value]

    def binary(self, data: bytes) -> bytes:
        return self._proto.send_data(data, True)  # type: ignore[return-value]

    def ping(self, payload: bytes) -> bytes:
        return self._proto.ping(payload)  # type: ignore[return-value]

    def close(self, code: int, reason: str) -> bytes:
        if self._close_sent:
            return b""
        self._close_sent = True
        return self._proto.close(code, _truncate(reason))  # type: ignore[return-value]


def _truncate(reason: str) -> str:
    # RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
    data = reason.encode("utf-8")
    if len(data) <= 123:
        return reason
    return data[:123].decode("utf-8", "ignore")


def _byte_length(payload: str | bytes) -> int:
    if isinstance(payload, str) and not payload.isascii():
        return len(payload.encode("utf-8"))
    return len(payload)


ENGINE = WsprotoEngine
