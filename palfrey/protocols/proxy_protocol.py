"""The PROXY protocol header, versions 1 and 2 (haproxy.org/download/3.0/doc/proxy-protocol.txt).

A TCP load balancer (HAProxy, AWS NLB, GCP's TCP proxy, ...) that cannot add HTTP headers
prepends one header to the connection instead, naming the client it accepted. This module
is sans-IO: `scan()` looks at the bytes received so far and says how many more of them
belong to the header (so that a reader never consumes a byte past it: with TLS, what
follows is the ClientHello, which the TLS layer must read itself), and `parse()` reads a
complete header. Nothing here trusts anyone: the caller decides whether the peer that
sent the header may speak for its clients.

Version 1 is one text line of at most 107 bytes: `PROXY TCP4|TCP6|UNKNOWN ...\\r\\n`.
Version 2 is binary: a 12-byte signature, a version/command byte, a family/protocol byte,
a 2-byte length, the addresses, then type-length-value fields (TLVs).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_V2_LENGTH",
    "V1_MAX",
    "V2_SIGNATURE",
    "ProxyHeaderError",
    "ProxyInfo",
    "Scan",
    "parse",
    "scan",
]

V1_PREFIX = b"PROXY "
V1_MAX = 107
"""Longest v1 header, CRLF included (the specification's bound, §2.1)."""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16
MAX_V2_LENGTH = 4096
"""Largest v2 address-and-TLV block accepted. The specification allows 65535 bytes; real
balancers send a few hundred at most (addresses, ALPN, authority, a unique id, TLS facts,
AWS's endpoint id), and a server must not buffer 64 KiB per unauthenticated connection."""

# v2 TLV types (§2.2.1 - 2.2.7).
_ALPN, _AUTHORITY, _CRC32C, _NOOP, _UNIQUE_ID, _SSL, _NETNS = 1, 2, 3, 4, 5, 0x20, 0x30
_SSL_SUBTYPES = {0x21: "version", 0x22: "cn", 0x23: "cipher", 0x24: "sig_alg", 0x25: "key_alg"}
_MAX_UNIQUE_ID = 128
_FAMILIES = {0x0: "UNSPEC", 0x1: "INET", 0x2: "INET6", 0x3: "UNIX"}
_PROTOCOLS = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}
_ADDRESS_LENGTHS = {"INET": 12, "INET6": 36, "UNIX": 216}


class ProxyHeaderError(Exception):
    """The bytes are not a valid PROXY header (the connection must be closed)."""


@dataclass(frozen=True)
class ProxyInfo:
    """What a PROXY header said."""

    version: int
    #: "PROXY" or "LOCAL" (v2: the balancer speaks for itself, a health check). Without a
    #: source (LOCAL, UNKNOWN, UNSPEC) the connection's own addresses stand.
    command: str
    #: "TCP4", "TCP6", "UDP4", "UDP6", "UNIX" or "UNKNOWN".
    transport: str
    #: The client, (host, port); for UNIX sources the path with port None.
    source: tuple[str, int | None] | None = None
    #: The address the client connected to.
    destination: tuple[str, int | None] | None = None
    tlvs: dict[str, Any] = field(default_factory=dict)

    @property
    def proxied(self) -> bool:
        """Whether the header names the client (else the peer's own address stands)."""
        return self.command == "PROXY" and self.source is not None

    def extension(self) -> dict[str, Any]:
        """The `palfrey.proxy_protocol` scope extension: what the header said."""
        return {
            "version": self.version,
            "command": self.command,
            "transport": self.transport,
            "source": list(self.source) if self.source else None,
            "destination": list(self.destination) if self.destination else None,
            **self.tlvs,
        }


@dataclass(frozen=True)
class Scan:
    """How far a reader may go.

    - `complete`: the header is `length` bytes long and all of them are at hand;
    - `take > 0`: that many more of the bytes at hand belong to the header (consume them,
      then wait for more);
    - `absent`: the bytes cannot start a PROXY header (nothing may be consumed);
    - none of these: too few bytes to tell (wait without consuming).
    """

    complete: bool = False
    length: int = 0
    take: int = 0
    absent: bool = False


def scan(data: bytes, *, versions: frozenset[int]) -> Scan:
    """Look at the first bytes of a connection (raises ProxyHeaderError on bad ones)."""
    if 1 in versions and data[:6] == V1_PREFIX:
        end = data.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return Scan(complete=True, length=end + 2)
        if len(data) >= V1_MAX or b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("PROXY v1 header too long or without CRLF")
        # Everything before the CRLF is header: a v1 reader may consume it as it comes.
        return Scan(take=len(data))
    if 2 in versions and data[:12] == V2_SIGNATURE:
        if len(data) < V2_HEADER:
            return Scan(take=len(data))
        length = struct.unpack_from("!H", data, 14)[0]
        if length > MAX_V2_LENGTH:
            raise ProxyHeaderError(f"PROXY v2 header of {length} bytes (at most {MAX_V2_LENGTH})")
        total = V2_HEADER + length
        if len(data) >= total:
            return Scan(complete=True, length=total)
        return Scan(take=len(data))
    if _could_start(data, versions):
        return Scan()
    return Scan(absent=True)


def _could_start(data: bytes, versions: frozenset[int]) -> bool:
    return (1 in versions and V1_PREFIX.startswith(data[:6])) or (
        2 in versions and V2_SIGNATURE.startswith(data[:12])
    )


def parse(header: bytes) -> ProxyInfo:
    """A complete header, as `scan()` delimited it."""
    if header.startswith(V1_PREFIX):
        return _parse_v1(header)
    return _parse_v2(header)


# -- version 1 ---------------------------------------------------------------------------


def _parse_v1(header: bytes) -> ProxyInfo:
    if not header.endswith(b"\r\n") or len(header) > V1_MAX:
        raise ProxyHeaderError("PROXY v1 header without CRLF")
    try:
        line = header[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        # §2.1: the rest of the line is ignored; the connection's own addresses stand.
        return ProxyInfo(version=1, command="PROXY", transport="UNKNOWN")
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 header: expected TCP4, TCP6 or UNKNOWN and 4 fields")
    _, family, source, destination, source_port, destination_port = parts
    kind = ipaddress.IPv4Address if family == "TCP4" else ipaddress.IPv6Address
    return ProxyInfo(
        version=1,
        command="PROXY",
        transport=family,
        source=(_address(kind, source), _port(source_port)),
        destination=(_address(kind, destination), _port(destination_port)),
    )


def _address(kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address], text: str) -> str:
    try:
        return str(kind(text))
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not an {kind.__name__}") from None


def _port(text: str) -> int:
    # Decimal, no sign, no leading zero (§2.1: "0 to 65535 ... without leading zeroes").
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not a port")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not a port")
    return port


# -- version 2 ---------------------------------------------------------------------------


def _parse_v2(header: bytes) -> ProxyInfo:
    if len(header) < V2_HEADER or header[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("not a PROXY v2 header")
    version_command, family_protocol, length = struct.unpack_from("!BBH", header, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
    command = {0: "LOCAL", 1: "PROXY"}.get(version_command & 0xF)
    if command is None:
        raise ProxyHeaderError(f"PROXY v2 header with command {version_command & 0xF}")
    family = _FAMILIES.get(family_protocol >> 4)
    protocol = _PROTOCOLS.get(family_protocol & 0xF)
    if family is None or protocol is None:
        raise ProxyHeaderError(f"PROXY v2 header with address family 0x{family_protocol:02x}")
    body = header[V2_HEADER:]
    if len(body) != length:
        raise ProxyHeaderError("PROXY v2 header length does not match its block")
    size = _ADDRESS_LENGTHS.get(family, 0)
    if len(body) < size:
        raise ProxyHeaderError(f"PROXY v2 header too short for {family} addresses")
    tlvs = _tlvs(body[size:], header)
    transport = _transport(family, protocol)
    if command == "LOCAL" or family == "UNSPEC" or protocol == "UNSPEC":
        # §2.2: LOCAL (the balancer's own health check) and UNSPEC carry no client.
        return ProxyInfo(version=2, command=command, transport=transport, tlvs=tlvs)
    source, destination = _v2_addresses(family, body)
    return ProxyInfo(2, command, transport, source, destination, tlvs)


def _transport(family: str, protocol: str) -> str:
    if family == "UNIX":
        return "UNIX"
    if family == "UNSPEC" or protocol == "UNSPEC":
        return "UNKNOWN"
    return ("TCP" if protocol == "STREAM" else "UDP") + ("4" if family == "INET" else "6")


def _v2_addresses(
    family: str, body: bytes
) -> tuple[tuple[str, int | None], tuple[str, int | None]]:
    if family == "INET":
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", body)
        return (str(ipaddress.IPv4Address(src)), sport), (str(ipaddress.IPv4Address(dst)), dport)
    if family == "INET6":
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", body)
        return (str(ipaddress.IPv6Address(src)), sport), (str(ipaddress.IPv6Address(dst)), dport)
    return (_unix_path(body[:108]), None), (_unix_path(body[108:216]), None)


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _tlvs(data: bytes, header: bytes) -> dict[str, Any]:
    """The TLVs Palfrey reads (§2.2), each bounded by the block it sits in."""
    found: dict[str, Any] = {}
    offset = 0
    while offset < len(data):
        if offset + 3 > len(data):
            raise ProxyHeaderError("PROXY v2 TLV truncated")
        kind, size = struct.unpack_from("!BH", data, offset)
        value = data[offset + 3 : offset + 3 + size]
        if len(value) != size:
            raise ProxyHeaderError("PROXY v2 TLV longer than the header")
        if kind == _CRC32C:
            _check_crc(header, len(header) - len(data) + offset + 3, value)
        elif kind == _ALPN:
            found["alpn"] = value.decode("ascii", "replace")
        elif kind == _AUTHORITY:
            found["authority"] = value.decode("utf-8", "replace")
        elif kind == _UNIQUE_ID:
            if size > _MAX_UNIQUE_ID:
                raise ProxyHeaderError("PROXY v2 unique id longer than 128 bytes")
            found["unique_id"] = value.hex()
        elif kind == _SSL:
            found["ssl"] = _ssl_tlv(value)
        elif kind == _NETNS:
            found["netns"] = value.decode("ascii", "replace")
        # NOOP and types Palfrey does not know (custom ones such as AWS's 0xEA) are skipped.
        offset += 3 + size
    return found


def _ssl_tlv(value: bytes) -> dict[str, Any]:
    """PP2_TYPE_SSL (§2.2.5): whether the client spoke TLS to the balancer, and how."""
    if len(value) < 5:
        raise ProxyHeaderError("PROXY v2 SSL TLV truncated")
    client, verify = struct.unpack_from("!BI", value)
    facts: dict[str, Any] = {
        "ssl": bool(client & 0x01),
        "client_cert_connection": bool(client & 0x02),
        "client_cert_session": bool(client & 0x04),
        "verified": verify == 0,
    }
    offset = 5
    while offset < len(value):
        if offset + 3 > len(value):
            raise ProxyHeaderError("PROXY v2 SSL sub-TLV truncated")
        kind, size = struct.unpack_from("!BH", value, offset)
        sub = value[offset + 3 : offset + 3 + size]
        if len(sub) != size:
            raise ProxyHeaderError("PROXY v2 SSL sub-TLV longer than its TLV")
        name = _SSL_SUBTYPES.get(kind)
        if name is not None:
            facts[name] = sub.decode("utf-8", "replace")
        offset += 3 + size
    return facts


def _check_crc(header: bytes, at: int, value: bytes) -> None:
    """PP2_TYPE_CRC32C (§2.2.3): the CRC-32c of the whole header with this field zeroed."""
    if len(value) != 4:
        raise ProxyHeaderError("PROXY v2 CRC32C TLV is not 4 bytes")
    zeroed = header[:at] + b"\0\0\0\0" + header[at + 4 :]
    if crc32c(zeroed) != struct.unpack("!I", value)[0]:
        raise ProxyHeaderError("PROXY v2 header fails its CRC32C check")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32c (Castagnoli; RFC 3720 §B.4), which zlib does not provide. Headers are short
    and checked once per connection, so a table-driven loop is enough."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
