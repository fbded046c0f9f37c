"""HPACK (RFC 7541) for the server side of HTTP/2: a decoder with its dynamic table, and
a stateless encoder whose field representations are cached.

The `hpack` library supplies the static table and the Huffman code. Its own `Decoder`
and `Encoder` are correct but cost about 16 µs and 11 µs for a typical request and
response (debug logging and tuple objects per field), more than the rest of a request
put together; measured, so these two are written here on its tables:

- `Decoder` decodes a block into a list of (name, value) byte pairs, keeps the dynamic
  table (§2.3.2, §4), enforces the table size we advertise (§4.2, §6.3) and the header
  list size, and counts `generation`: a block that did not change the table decodes the
  same way until the generation moves, so its result can be cached by its bytes.
- `Encoder` never indexes (§6.2.2 "literal without indexing", static-table names where
  they exist, Huffman when shorter), so a field's encoding does not depend on any state
  and is computed once per distinct field. Responses are a few dozen bytes larger than
  with a dynamic table; no table size update is ever needed.
"""

from __future__ import annotations

from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["DecodeError", "Decoder", "Encoder", "HeaderListTooLarge"]

_STATIC: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_COUNT = len(_STATIC)  # 61
_ENTRY_OVERHEAD = 32  # §4.1
_MAX_INTEGER = 1 << 32
_HUFFMAN_CACHE: dict[bytes, bytes] = {}  # Huffman-coded strings clients repeat (bounded)
_HUFFMAN_CACHE_MAX = 2048


class DecodeError(Exception):
    """A header block that cannot be decoded: a COMPRESSION_ERROR (RFC 9113 §4.3)."""


class HeaderListTooLarge(DecodeError):
    """The decoded list exceeds SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §10.5.1)."""


def _integer(data: bytes, pos: int, mask: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (§5.1) at `pos`: (value, next position)."""
    try:
        value = data[pos] & mask
        pos += 1
        if value < mask:
            return value, pos
        shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 28:
                raise DecodeError("integer too long")
    except IndexError:
        raise DecodeError("truncated integer") from None
    if value >= _MAX_INTEGER:
        raise DecodeError("integer too large")
    return value, pos


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal (§5.2) at `pos`: (bytes, next position)."""
    if pos >= len(data):
        raise DecodeError("truncated field")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 0x7F)
    end = pos + length
    if end > len(data):
        raise DecodeError("truncated string literal")
    raw = data[pos:end]
    if not huffman:
        return raw, end
    text = _HUFFMAN_CACHE.get(raw)
    if text is None:
        try:
            text = decode_huffman(raw)
        except HPACKDecodingError as exc:
            raise DecodeError(str(exc)) from None
        if len(raw) <= 128:
            if len(_HUFFMAN_CACHE) >= _HUFFMAN_CACHE_MAX:
                _HUFFMAN_CACHE.clear()
            _HUFFMAN_CACHE[raw] = text
    return text, end


class Decoder:
    """One connection's HPACK decoding context."""

    __slots__ = ("_entries", "_size", "generation", "max_list_size", "max_table_size", "table_size")

    def __init__(self, max_list_size: int, max_table_size: int = 4096) -> None:
        #: SETTINGS_HEADER_TABLE_SIZE we advertised: the most a size update may ask for.
        self.max_table_size = max_table_size
        self.max_list_size = max_list_size
        self.table_size = max_table_size  # the encoder's current limit (§4.2)
        self._entries: list[tuple[bytes, bytes]] = []  # oldest first
        self._size = 0
        self.generation = 0  # moves whenever the dynamic table changes

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The fields of one complete header block."""
        fields: list[tuple[bytes, bytes]] = []
        append = fields.append
        size = 0
        limit = self.max_list_size
        pos = 0
        end = len(data)
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # §6.1 indexed field
                index, pos = _integer(data, pos, 0x7F)
                field = self._field(index)
            elif byte & 0x40:  # §6.2.1 literal with incremental indexing
                field, pos = self._literal(data, pos, 0x3F)
                self._add(field)
            elif byte & 0x20:  # §6.3 dynamic table size update
                if fields:
                    raise DecodeError("table size update after a field")  # §4.2
                new_size, pos = _integer(data, pos, 0x1F)
                if new_size > self.max_table_size:
                    raise DecodeError("table size update over SETTINGS_HEADER_TABLE_SIZE")
                self.table_size = new_size
                self._evict()
                self.generation += 1
                continue
            else:  # §6.2.2, §6.2.3 literal without indexing / never indexed
                field, pos = self._literal(data, pos, 0x0F)
            size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if size > limit:
                raise HeaderListTooLarge("header list larger than SETTINGS_MAX_HEADER_LIST_SIZE")
            append(field)
        return fields

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index - 1]
        entries = self._entries
        offset = index - _STATIC_COUNT
        if index == 0 or offset > len(entries):
            raise DecodeError(f"invalid table index {index}")  # §2.3.3
        return entries[-offset]

    def _literal(self, data: bytes, pos: int, mask: int) -> tuple[tuple[bytes, bytes], int]:
        index, pos = _integer(data, pos, mask)
        if index:
            name = self._field(index)[0]
        else:
            name, pos = _string(data, pos)
        value, pos = _string(data, pos)
        return (name, value), pos

    def _add(self, field: tuple[bytes, bytes]) -> None:
        # §4.4: an entry larger than the table empties it and is not added.
        self.generation += 1
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        if size > self.table_size:
            self._entries.clear()
            self._size = 0
            return
        self._entries.append(field)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        while self._size > self.table_size:
            name, value = entries.pop(0)
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


# -- encoding ------------------------------------------------------------------------------

_huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _) in enumerate(_STATIC, 1):
    _STATIC_NAMES.setdefault(_name, _index)
# :status values that have a static-table entry (§A): one byte each.
_STATUS_INDEXED = {
    int(value): bytes([0x80 | index])
    for index, (name, value) in enumerate(_STATIC, 1)
    if name == b":status"
}
_FIELDS_MAX = 4096


def _encode_integer(value: int, prefix: int, bits: int) -> bytes:
    """`value` with an N-bit prefix (§5.1), `prefix` holding the representation's bits."""
    mask = (1 << bits) - 1
    if value < mask:
        return bytes([prefix | value])
    out = bytearray([prefix | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(data: bytes) -> bytes:
    coded = _huffman(data)
    if len(coded) < len(data):
        return _encode_integer(len(coded), 0x80, 7) + coded
    return _encode_integer(len(data), 0, 7) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field as a literal without indexing (§6.2.2)."""
    index = _STATIC_NAMES.get(name)
    if index is not None:
        return _encode_integer(index, 0, 4) + _encode_string(value)
    return b"\x00" + _encode_string(name) + _encode_string(value)


class Encoder:
    """Stateless response-field encoding, shared by every connection of a server."""

    __slots__ = ("_fields", "_status")

    def __init__(self) -> None:
        self._fields: dict[tuple[bytes, bytes], bytes] = {}
        self._status: dict[int, bytes] = dict(_STATUS_INDEXED)

    def status(self, code: int) -> bytes:
        encoded = self._status.get(code)
        if encoded is None:
            encoded = self._status[code] = encode_field(b":status", b"%d" % code)
        return encoded

    def field(self, name: bytes, value: bytes) -> bytes:
        """The representation of a (lower-case, checked) field, cached when short."""
        pair = (name, value)
        encoded = self._fields.get(pair)
        if encoded is None:
            encoded = encode_field(name, value)
            if len(value) <= 128:
                if len(self._fields) >= _FIELDS_MAX:
                    # Per-response values (request ids) would fill it for good: start over
                    # so the constant fields of the app's responses come back.
                    self._fields.clear()
                self._fields[pair] = encoded
        return encoded

    def block(self, fields: list[tuple[bytes, bytes]]) -> bytes:
        """A header block of plain fields (trailers, informational responses)."""
        field = self.field
        return b"".join([field(n, v) for n, v in fields])
