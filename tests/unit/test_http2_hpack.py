"""Palfrey's HPACK decoder and encoder held against the hpack library (an independent
implementation of RFC 7541): what one encodes the other decodes to the same fields,
errors included, over random field lists, table sizes and random bytes."""

from __future__ import annotations

from typing import Any

import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from palfrey.protocols.http2_hpack import DecodeError, Decoder, Encoder, HeaderListTooLarge

names = st.sampled_from(
    [b":path", b"content-type", b"x-a", b"cookie", b"user-agent", b"accept", b"x-custom-name"]
) | st.binary(min_size=1, max_size=20)
values = st.binary(max_size=60) | st.sampled_from([b"", b"/", b"text/plain", b"gzip, br"])
fields = st.lists(st.tuples(names, values), max_size=12)


@given(st.lists(fields, min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_our_encoding_decodes_with_hpack(blocks: list[list[tuple[bytes, bytes]]]) -> None:
    encoder = Encoder()
    reference = hpack.Decoder()
    for block in blocks:
        decoded = reference.decode(encoder.block(block), raw=True)
        assert [tuple(f) for f in decoded] == block


@given(
    st.lists(
        st.tuples(
            fields,
            st.booleans(),  # Huffman
            st.booleans(),  # never indexed
            st.sampled_from([None, 0, 64, 256, 4096]),  # table size change before
        ),
        min_size=1,
        max_size=8,
    )
)
@settings(max_examples=300, deadline=None)
def test_decoder_agrees_with_hpack(blocks: list[Any]) -> None:
    encoder = hpack.Encoder()
    reference = hpack.Decoder()
    ours = Decoder(max_list_size=1 << 20)
    for block, huffman, sensitive, size in blocks:
        if size is not None:
            encoder.header_table_size = size
        kind = NeverIndexedHeaderTuple if sensitive else HeaderTuple
        data = encoder.encode([kind(n, v) for n, v in block], huffman=huffman)
        expected = [tuple(f) for f in reference.decode(data, raw=True)]
        assert ours.decode(data) == expected == block


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_decode_or_fail_like_hpack(blocks: list[bytes]) -> None:
    reference = hpack.Decoder()
    ours = Decoder(max_list_size=65536)
    for data in blocks:
        try:
            expected: Any = [tuple(f) for f in reference.decode(data, raw=True)]
        except hpack.HPACKError:
            expected = DecodeError
        try:
            got: Any = ours.decode(data)
        except DecodeError:
            got = DecodeError
        assert got == expected, data
        if expected is DecodeError:
            return  # a decoding error ends the connection: the contexts may differ now


def test_header_list_size_is_enforced_while_decoding() -> None:
    block = hpack.Encoder().encode([(b"x-a", b"v" * 100)] * 10)
    with pytest.raises(HeaderListTooLarge):
        Decoder(max_list_size=500).decode(block)
    assert len(Decoder(max_list_size=5000).decode(block)) == 10


@pytest.mark.parametrize(
    "data",
    [
        b"\x80",  # index 0 (§6.1)
        b"\xff\x80\x01",  # index beyond both tables (§2.3.3)
        b"\x3f\xe2\x1f",  # table size update (4097) over SETTINGS_HEADER_TABLE_SIZE (§6.3)
        b"\x82\x20",  # table size update after a field (§4.2)
        b"\x00\x85\xff\xff\xff\xff\xff\x00",  # Huffman with the EOS symbol (§5.2)
        b"\x00\x03ab",  # string literal longer than the block
        b"\x7f\xff\xff\xff\xff\xff\x01",  # integer too large
    ],
)
def test_decoding_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Decoder(max_list_size=65536).decode(data)


def test_status_codes_use_the_static_table_when_they_can() -> None:
    encoder = Encoder()
    assert encoder.status(200) == b"\x88"
    assert hpack.Decoder().decode(encoder.status(418), raw=True) == [(b":status", b"418")]
