"""The frame-level facts both WebSocket engines' fast paths share (RFC 6455 §5.2, §5.3).

Most frames a server receives are whole, final, masked text or binary frames with no
extension bits: an engine unmasks and delivers those itself and gives every other frame
(control frames, fragments, compressed or malformed frames) to its library.
"""

from __future__ import annotations

from collections.abc import Callable

#: The first byte of a final, uncompressed text or binary frame (FIN + opcode 1 or 2).
PLAIN_TEXT = 0x81
PLAIN_BINARY = 0x82
_MASKED = 0x80

# Payloads from this size are unmasked from a view of the read rather than a slice.
_VIEW_FROM = 4096
# Without the C unmasking: up to this size XOR-ing two big integers beats wsproto's four
# strided translates; above it the translates win.
_INT_MASK_LIMIT = 2048

_c_apply_mask: Callable[[bytes | bytearray | memoryview, bytes], bytes] | None
try:  # the websockets library's C unmasking, when it is installed
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # pragma: no cover - depends on the environment
    _c_apply_mask = None


def apply_mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR `data` with the 4-byte masking `key` (RFC 6455 §5.3)."""
    if _c_apply_mask is not None:
        return _c_apply_mask(data, key)
    length = len(data)
    if length > _INT_MASK_LIMIT:
        try:
            from wsproto.frame_protocol import XorMaskerSimple
        except ImportError:  # pragma: no cover - only the websockets library installed
            pass
        else:  # four strided translates: the fastest pure-Python unmasking when large
            return bytes(XorMaskerSimple(key).process(bytearray(data)))
    # One XOR of two big integers: the fastest pure-Python unmasking of a small payload.
    mask = int.from_bytes((key * (length // 4 + 1))[:length], "little")
    return (int.from_bytes(data, "little") ^ mask).to_bytes(length, "little")


def frame_extent(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """Where the payload of the frame whose header starts at `pos` begins, and its
    declared length; None while the length itself has not arrived."""
    if end - pos < 2:
        return None
    length = data[pos + 1] & 0x7F
    start = pos + 2
    if length == 126:
        start += 2
        if start > end:
            return None
        length = int.from_bytes(data[pos + 2 : start], "big")
    elif length == 127:
        start += 8
        if start > end:
            return None
        length = int.from_bytes(data[pos + 2 : start], "big")
    if data[pos + 1] & _MASKED:
        start += 4  # the masking key (the caller checks the frame is complete)
    return start, length


def is_plain(data: bytes, pos: int) -> bool:
    """The frame at `pos` is final, masked, text or binary, with no reserved bits."""
    first = data[pos]
    return first in (PLAIN_TEXT, PLAIN_BINARY) and bool(data[pos + 1] & _MASKED)


def plain_message(data: bytes, pos: int, start: int, stop: int) -> str | bytes | None:
    """The message of the plain frame at `pos` whose payload is data[start:stop]: text or
    bytes, unmasked; None when a text payload is not UTF-8 (RFC 6455 §8.1: close 1007)."""
    key = data[start - 4 : start]
    if stop - start < _VIEW_FROM:
        payload = apply_mask(data[start:stop], key)
    else:
        payload = apply_mask(memoryview(data)[start:stop], key)
    if data[pos] != PLAIN_TEXT:
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
