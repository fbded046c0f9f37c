"""The sans-IO request body decoders (RFC 9112 §6.2, §7.1), fed whole and split."""

from __future__ import annotations

import pytest

from palfrey.protocols.http11_chunked import ChunkedDecoder, LengthDecoder
from palfrey.protocols.limits import ProtocolError

BODY = b'5;a=b;c="d e"\r\nhello\r\n06\r\n world\r\n0\r\nX-Trailer: y\t\r\n\r\n'
REST = b"GET / HTTP/1.1\r\n"


def _decode(pieces: list[bytes], max_line: int = 64, max_trailer: int = 64) -> tuple[bytes, bytes]:
    out: list[bytes] = []
    decoder = ChunkedDecoder(out.append, max_line=max_line, max_trailer=max_trailer)
    for piece in pieces:
        rest = decoder.feed(piece)
        if rest is not None:
            return b"".join(out), rest
    raise AssertionError("body did not end")


def test_whole_and_split_at_every_byte() -> None:
    data = BODY + REST
    assert _decode([data]) == (b"hello world", REST)
    for cut in range(1, len(data)):
        body, rest = _decode([data[:cut], data[cut:]])
        assert body == b"hello world"
        # The rest is what followed the body in the piece that ended it.
        assert rest == (data[len(BODY) : cut] if cut >= len(BODY) else REST)
    body, rest = _decode([bytes([byte]) for byte in BODY])
    assert (body, rest) == (b"hello world", b"")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"5 \r\nhello\r\n0\r\n\r\n", 400),  # BWS after the size
        (b"5;ext\rx\r\nhello\r\n0\r\n\r\n", 400),  # bare CR in an extension
        (b"5;ext\nhello\r\n0\r\n\r\n", 400),  # bare LF
        (b"5; a=b\r\nhello\r\n0\r\n\r\n", 400),
        (b"5;\r\nhello\r\n0\r\n\r\n", 400),
        (b"-5\r\nhello\r\n0\r\n\r\n", 400),
        (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
        (b"\r\nhello\r\n0\r\n\r\n", 400),
        (b"10000000000000000\r\n", 400),  # 2**64: overflow
        (b"5\r\nhelloXX0\r\n\r\n", 400),
        (b"0\r\nX-Trailer: y\n\r\n", 400),
        (b"0\r\nBad Name: y\r\n\r\n", 400),
        (b"0\r\nX : y\r\n\r\n", 400),
        (b"0\r\n folded\r\n\r\n", 400),
        (b"0\r\nX: \x01\r\n\r\n", 400),
        (b"5;" + b"a" * 80 + b"\r\n", 400),  # chunk line over max_line
        (b"0\r\nX: " + b"a" * 80 + b"\r\n\r\n", 431),  # trailer section over max_trailer
    ],
)
def test_malformed_chunked_bodies(body: bytes, status: int) -> None:
    for pieces in ([body], [bytes([byte]) for byte in body]):
        with pytest.raises(ProtocolError) as info:
            _decode(pieces)
        assert info.value.status == status


def test_length_decoder() -> None:
    out: list[bytes] = []
    decoder = LengthDecoder(out.append, 5)
    assert decoder.feed(b"he") is None
    assert decoder.feed(b"llo" + REST) == REST
    assert out == [b"he", b"llo"]
