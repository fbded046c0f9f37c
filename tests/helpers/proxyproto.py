"""PROXY protocol headers for tests, built from the specification
(haproxy.org/download/3.0/doc/proxy-protocol.txt), not from Palfrey's parser."""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def v2(
    src: str | None = None,
    dst: str | None = None,
    sport: int = 0,
    dport: int = 0,
    *,
    command: int = 1,
    dgram: bool = False,
    tlvs: bytes = b"",
    unix: tuple[str, str] | None = None,
) -> bytes:
    """A v2 header: PROXY (command 1) or LOCAL (0), INET/INET6 from the addresses, UNIX
    from `unix`, UNSPEC when neither is given."""
    protocol = 0x2 if dgram else 0x1
    if unix is not None:
        family, block = 0x3, unix[0].encode().ljust(108, b"\0") + unix[1].encode().ljust(108, b"\0")
    elif src is None or dst is None:
        family, protocol, block = 0x0, 0x0, b""
    else:
        source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        family = 0x1 if source.version == 4 else 0x2
        block = source.packed + destination.packed + struct.pack("!HH", sport, dport)
    body = block + tlvs
    return (
        SIGNATURE
        + bytes([0x20 | command, family << 4 | protocol])
        + struct.pack("!H", len(body))
        + body
    )


def crc32c(data: bytes) -> int:
    """Bitwise CRC-32c (Castagnoli), the slow obvious way: an independent check of the
    table-driven one in palfrey.protocols.proxy_protocol."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def with_crc(header: bytes) -> bytes:
    """`header` with a PP2_TYPE_CRC32C TLV appended and its checksum filled in."""
    zeroed = tlv(0x03, b"\0\0\0\0")
    length = struct.unpack_from("!H", header, 14)[0] + len(zeroed)
    draft = header[:14] + struct.pack("!H", length) + header[16:] + zeroed
    return draft[:-4] + struct.pack("!I", crc32c(draft))
