"""HTTP/2 frame codec (RFC 9113 §4, §6): constants, frame serialisation, payload parsing.

Sans-IO and stateless: the connection (`http2_connection.py`) reads frame headers with
`HEADER.unpack_from` in its own loop and calls these helpers for payloads; everything
it sends is built here. A payload that breaks its frame type's rules raises
`H2ConnectionError` or `StreamError` with the RFC's error code.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from enum import IntEnum

__all__ = [
    "HEADER",
    "PREFACE",
    "ErrorCode",
    "H2ConnectionError",
    "Setting",
    "StreamError",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface (RFC 9113 §3.4)."""

# Frame types (§6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

MAX_WINDOW = (1 << 31) - 1  # §6.9.1
DEFAULT_WINDOW = 65535  # §6.9.2
MIN_FRAME_SIZE = 1 << 14  # §4.2
MAX_FRAME_SIZE = (1 << 24) - 1

#: A frame header: 24-bit length and 8-bit type as one big-endian word, flags, stream id.
HEADER = struct.Struct(">IBI")
_pack_header = HEADER.pack
_U32 = struct.Struct(">I")
_pack_u32 = _U32.pack
_unpack_u32 = _U32.unpack_from
_SETTING = struct.Struct(">HI")
_pack_goaway = struct.Struct(">II").pack


class ErrorCode(IntEnum):
    """Error codes (§7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(IntEnum):
    """SETTINGS parameters (§6.5.2; RFC 8441 §3 for ENABLE_CONNECT_PROTOCOL)."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


class H2ConnectionError(Exception):
    """A connection error (§5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StreamError(Exception):
    """A stream error (§5.4.2): RST_STREAM with `code` on `stream_id`."""

    def __init__(self, stream_id: int, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.stream_id = stream_id
        self.code = code


# -- serialisation -------------------------------------------------------------------------


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame (§4.1)."""
    return _pack_header(len(payload) << 8 | kind, flags, stream_id) + payload


def frame_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    """A frame header alone, for a payload written beside it."""
    return _pack_header(length << 8 | kind, flags, stream_id)


def header_block(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> list[bytes]:
    """HEADERS, and CONTINUATION frames when the block exceeds the peer's frame size
    (§6.2, §6.10)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return [_pack_header(len(block) << 8 | HEADERS, flags | END_HEADERS, stream_id), block]
    parts = []
    kind = HEADERS
    view = memoryview(block)
    while view:
        chunk, view = view[:max_frame], view[max_frame:]
        last = END_HEADERS if not view else 0
        parts.append(_pack_header(len(chunk) << 8 | kind, flags | last, stream_id))
        parts.append(chunk.tobytes())
        kind, flags = CONTINUATION, 0
    return parts


def settings(values: Mapping[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def ping(payload: bytes, ack: bool) -> bytes:
    return frame(PING, ACK if ack else 0, 0, payload)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _pack_goaway(last_stream_id, code) + debug)


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _pack_u32(code))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _pack_u32(increment))


# -- payload parsing -----------------------------------------------------------------------


def strip_padding(payload: bytes, flags: int) -> bytes:
    """The payload of a DATA or HEADERS frame without its padding (§6.1, §6.2)."""
    if not flags & PADDED:
        return payload
    if not payload:
        raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PADDED frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        # §6.1: padding as long as the payload or longer is a PROTOCOL_ERROR.
        raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding exceeds the payload")
    return payload[1 : len(payload) - pad]


def dependency(payload: bytes, stream_id: int) -> int:
    """The stream a PRIORITY frame (or HEADERS priority block) depends on (§6.3)."""
    depends_on: int = _unpack_u32(payload)[0] & MAX_WINDOW
    if depends_on == stream_id:
        # §5.3.1: a stream cannot depend on itself.
        raise StreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
    return depends_on


def u32(payload: bytes, offset: int = 0) -> int:
    value: int = _unpack_u32(payload, offset)[0]
    return value


def settings_values(payload: bytes) -> list[tuple[int, int]]:
    """The (identifier, value) pairs of a SETTINGS payload, in order (§6.5.1)."""
    if len(payload) % 6:
        raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]
