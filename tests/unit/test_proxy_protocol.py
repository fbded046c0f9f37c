"""The PROXY protocol parser (sans-IO): what scan() lets a reader consume, at every split,
and what parse() reads or refuses."""

from __future__ import annotations

import struct

import pytest

from palfrey.protocols.proxy_protocol import (
    MAX_V2_LENGTH,
    ProxyHeaderError,
    Scan,
    crc32c,
    parse,
    scan,
)
from tests.helpers import proxyproto

BOTH = frozenset({1, 2})
V1 = frozenset({1})
V2 = frozenset({2})
REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def read_like_a_socket(stream: bytes, versions: frozenset[int], split: int) -> tuple[bytes, int]:
    """Feed `stream` in two arrivals split at `split`, consuming only what scan() allows;
    return the header read and how many bytes of the stream stayed unconsumed."""
    consumed = b""
    arrived = stream[:split]
    for more in (b"", stream[split:]):
        arrived += more
        while True:
            peeked = arrived[len(consumed) :]
            if not peeked:
                break
            result = scan(consumed + peeked, versions=versions)
            if result.complete:
                consumed += peeked[: result.length - len(consumed)]
                return consumed, len(stream) - len(consumed)
            if result.absent:
                return b"", len(stream) - len(consumed)
            if not result.take or result.take == len(consumed):
                break  # wait for more bytes
            consumed += peeked[: result.take - len(consumed)]
    raise AssertionError("the header never completed")


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        (proxyproto.v1("203.0.113.7", "192.0.2.1", 56324, 443), V1),
        (proxyproto.v1("2001:db8::7", "2001:db8::1", 1, 65535), BOTH),
        (b"PROXY UNKNOWN\r\n", V1),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", BOTH),
        (proxyproto.v2("203.0.113.7", "192.0.2.1", 56324, 443), V2),
        (
            proxyproto.v2("2001:db8::7", "2001:db8::1", 7, 8, tlvs=proxyproto.tlv(2, b"a.example")),
            BOTH,
        ),
        (proxyproto.v2(command=0), V2),
        (proxyproto.with_crc(proxyproto.v2("198.51.100.1", "192.0.2.1", 1, 2)), V2),
    ],
)
@pytest.mark.parametrize("after", [REQUEST, CLIENT_HELLO, b""])
def test_a_reader_never_consumes_past_the_header(
    header: bytes, versions: frozenset[int], after: bytes
) -> None:
    stream = header + after
    for split in range(1, len(stream) + 1):
        read, left = read_like_a_socket(stream, versions, split)
        assert read == header, split
        assert left == len(after), split  # what follows is the TLS layer's or the parser's
        parse(read)


@pytest.mark.parametrize("data", [REQUEST, CLIENT_HELLO, b"\x00\x01", b"PUT /x HTTP/1.1\r\n"])
def test_no_header_is_absent_without_consuming(data: bytes) -> None:
    for split in range(1, len(data) + 1):
        read, left = read_like_a_socket(data, BOTH, split)
        assert (read, left) == (b"", len(data))


def test_a_prefix_that_could_be_either_waits() -> None:
    assert scan(b"P", versions=BOTH) == scan(b"PROX", versions=BOTH)
    assert scan(b"PROX", versions=BOTH) == Scan()  # nothing complete, absent or to take
    assert scan(b"\r\n\r\n\x00", versions=BOTH).take == 0
    assert scan(b"POST", versions=BOTH).absent


def test_v1_reads_addresses_and_ports() -> None:
    info = parse(proxyproto.v1("203.0.113.7", "192.0.2.1", 56324, 443))
    assert (info.version, info.command, info.transport) == (1, "PROXY", "TCP4")
    assert (info.source, info.destination) == (("203.0.113.7", 56324), ("192.0.2.1", 443))
    assert info.proxied
    six = parse(proxyproto.v1("2001:db8::7", "2001:db8::1", 0, 65535))
    assert six.source == ("2001:db8::7", 0)
    unknown = parse(b"PROXY UNKNOWN whatever follows\r\n")
    assert (unknown.transport, unknown.proxied) == ("UNKNOWN", False)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",  # a field missing
        b"PROXY TCP4 203.0.113.7  192.0.2.1 56324 443\r\n",  # double space
        b"PROXY TCP5 203.0.113.7 192.0.2.1 56324 443\r\n",
        b"PROXY TCP4 2001:db8::7 192.0.2.1 56324 443\r\n",  # an IPv6 address as TCP4
        b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 203.0.113.07 192.0.2.1 1 2\r\n",  # a leading zero in an octet
        b"PROXY TCP4 203.0.113.7 192.0.2.1 01 2\r\n",  # a leading zero in a port
        b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 +1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 \xd9\xa1 2\r\n",
    ],
)
def test_v1_strict_syntax(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(scan_whole(line, V1))


def scan_whole(data: bytes, versions: frozenset[int]) -> bytes:
    result = scan(data, versions=versions)
    assert result.complete
    return data[: result.length]


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY " + b"x" * 120,  # no CRLF within 107 bytes
        b"PROXY TCP4 1.2.3.4\n",  # bare LF
        b"PROXY TCP4 1.2.3.4\r5.6.7.8",  # bare CR
    ],
)
def test_v1_bounds_are_checked_while_scanning(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        scan(data, versions=V1)


def test_v1_limit_is_107_bytes() -> None:
    address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = f"PROXY TCP6 {address} {address} 65535 65535\r\n".encode()
    assert len(longest) == 104  # the specification's worst case fits
    parse(scan_whole(longest, V1))
    padded = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
    assert len(padded) == 107
    assert scan(padded, versions=V1).complete
    with pytest.raises(ProxyHeaderError):
        scan(b"PROXY UNKNOWN " + b"x" * (108 - 16) + b"\r\n", versions=V1)


def test_v2_addresses_commands_and_families() -> None:
    info = parse(proxyproto.v2("203.0.113.7", "192.0.2.1", 56324, 443))
    assert (info.version, info.command, info.transport) == (2, "PROXY", "TCP4")
    assert (info.source, info.destination) == (("203.0.113.7", 56324), ("192.0.2.1", 443))
    six = parse(proxyproto.v2("2001:db8::7", "2001:db8::1", 7, 8, dgram=True))
    assert (six.transport, six.source) == ("UDP6", ("2001:db8::7", 7))
    local = parse(proxyproto.v2("203.0.113.7", "192.0.2.1", 1, 2, command=0))
    assert (local.command, local.proxied) == ("LOCAL", False)
    unspec = parse(proxyproto.v2())
    assert (unspec.transport, unspec.proxied) == ("UNKNOWN", False)
    unix = parse(proxyproto.v2(unix=("/run/client.sock", "/run/lb.sock")))
    assert (unix.transport, unix.source, unix.destination) == (
        "UNIX",
        ("/run/client.sock", None),
        ("/run/lb.sock", None),
    )


def test_v2_tlvs_are_exposed() -> None:
    ssl_tlv = struct.pack("!BI", 0x01 | 0x02, 0) + proxyproto.tlv(0x21, b"TLSv1.3")
    ssl_tlv += proxyproto.tlv(0x22, b"client.example") + proxyproto.tlv(
        0x23, b"TLS_AES_128_GCM_SHA256"
    )
    tlvs = (
        proxyproto.tlv(0x01, b"h2")
        + proxyproto.tlv(0x02, b"api.example.com")
        + proxyproto.tlv(0x05, b"\x01\x02\xff")
        + proxyproto.tlv(0x04, b"padding")
        + proxyproto.tlv(0xEA, b"\x01vpce-0123")  # AWS's custom TLV: skipped
        + proxyproto.tlv(0x20, ssl_tlv)
    )
    info = parse(proxyproto.v2("203.0.113.7", "192.0.2.1", 1, 2, tlvs=tlvs))
    assert info.tlvs == {
        "alpn": "h2",
        "authority": "api.example.com",
        "unique_id": "0102ff",
        "ssl": {
            "ssl": True,
            "client_cert_connection": True,
            "client_cert_session": False,
            "verified": True,
            "version": "TLSv1.3",
            "cn": "client.example",
            "cipher": "TLS_AES_128_GCM_SHA256",
        },
    }
    extension = info.extension()
    assert extension["authority"] == "api.example.com"
    assert extension["source"] == ["203.0.113.7", 1]


def test_crc32c_matches_a_bitwise_implementation_and_rfc_3720() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    for data in (b"", b"a", bytes(range(256))):
        assert crc32c(data) == proxyproto.crc32c(data)


def test_v2_crc_is_verified() -> None:
    good = proxyproto.with_crc(proxyproto.v2("198.51.100.1", "192.0.2.1", 1, 2))
    parse(good)
    bad = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(ProxyHeaderError, match="CRC32C"):
        parse(bad)


@pytest.mark.parametrize(
    "header",
    [
        proxyproto.SIGNATURE + bytes([0x11, 0x11]) + struct.pack("!H", 12) + bytes(12),  # v1 byte
        proxyproto.SIGNATURE + bytes([0x22, 0x11]) + struct.pack("!H", 12) + bytes(12),  # cmd 2
        proxyproto.SIGNATURE + bytes([0x21, 0x41]) + struct.pack("!H", 12) + bytes(12),  # family
        proxyproto.SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 8) + bytes(8),  # short
        proxyproto.v2("1.2.3.4", "5.6.7.8", 1, 2, tlvs=b"\x01\x00\x09ab"),  # TLV too long
        proxyproto.v2("1.2.3.4", "5.6.7.8", 1, 2, tlvs=b"\x01\x00"),  # TLV truncated
        proxyproto.v2("1.2.3.4", "5.6.7.8", 1, 2, tlvs=proxyproto.tlv(5, bytes(129))),
        proxyproto.v2("1.2.3.4", "5.6.7.8", 1, 2, tlvs=proxyproto.tlv(0x20, b"\x01")),
        proxyproto.v2("1.2.3.4", "5.6.7.8", 1, 2, tlvs=proxyproto.tlv(3, b"\x00")),
    ],
)
def test_v2_malformed_headers_are_refused(header: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(scan_whole(header, V2))


def test_v2_length_is_bounded_before_reading() -> None:
    huge = proxyproto.SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", MAX_V2_LENGTH + 1)
    with pytest.raises(ProxyHeaderError, match="at most"):
        scan(huge, versions=V2)
    most = proxyproto.v2(
        "1.2.3.4", "5.6.7.8", 1, 2, tlvs=proxyproto.tlv(4, bytes(MAX_V2_LENGTH - 15))
    )
    assert scan(most, versions=V2).complete


def test_only_the_configured_versions_are_read() -> None:
    assert scan(proxyproto.v1("1.2.3.4", "5.6.7.8", 1, 2), versions=V2).absent
    assert scan(proxyproto.v2("1.2.3.4", "5.6.7.8", 1, 2), versions=V1).absent
