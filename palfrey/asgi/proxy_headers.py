"""Forwarding headers from trusted proxies: X-Forwarded-* and RFC 7239 `Forwarded`.

The HTTP core builds one `TrustedProxies` from `proxy.forwarded_allow_ips` and calls
`apply(scope)` on each HTTP and WebSocket scope before the app sees it. Values that do not
parse are ignored, never raised.

Trust (as uvicorn): "*" trusts every peer; IP addresses and CIDR networks match the peer's
address (an IPv4-mapped IPv6 peer such as ::ffff:127.0.0.1 also matches its IPv4 form);
anything else is a literal compared as a string. A UNIX-socket peer has no address (scope
"client" is None): it is trusted when "*" or any literal (e.g. the socket path) is listed.
uvicorn trusts UNIX peers only with "*", although its docs offer socket paths as literals;
listing the path is the explicit way to say "trust whoever connects to my socket".

What is applied, from a trusted peer:

- client: X-Forwarded-For or `Forwarded: for=`, walked right to left (each proxy appends
  the address it received from) to the first untrusted hop; when every hop is trusted,
  the leftmost one. With "*", the leftmost one (uvicorn). Only an IP address (with an
  optional port) replaces the client; "unknown" and obfuscated identifiers (RFC 7239 §6.2,
  §6.3) leave it as it was.
- scheme: X-Forwarded-Proto or `proto=`: http, https, ws or wss only; WebSocket scopes get
  ws/wss and HTTP scopes http/https whichever spelling the proxy used.
- host: X-Forwarded-Host or `host=`, and X-Forwarded-Port: they replace the Host header
  (frameworks build URLs from it) and scope "server". The port in X-Forwarded-Port wins
  over one inside the forwarded host.
- root_path: X-Forwarded-Prefix (percent-decoded) is prepended to root_path, and to path,
  since ASGI's path includes root_path. raw_path stays the bytes that came on the wire.

Which value of a list: for `Forwarded`, the element whose `for=` was chosen above; its
proto and host describe the request as the client sent it to the first trusted proxy
(RFC 7239 §5). For X-Forwarded-Proto/Host/Port, the entry at the same position as the
chosen X-Forwarded-For entry when both lists have the same length (every proxy
appended), else the rightmost entry (written by the peer we trust).

Precedence: when both kinds are present, `Forwarded` wins field by field (it is the
standard and carries each hop's values together); X-Forwarded-* fill only what a usable
`Forwarded` element did not give. A malformed `Forwarded` header is ignored as a whole.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import MutableMapping, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = ["TrustedProxies"]

_FORWARDED = b"forwarded"
_XFF = b"x-forwarded-for"
_XFPROTO = b"x-forwarded-proto"
_XFHOST = b"x-forwarded-host"
_XFPORT = b"x-forwarded-port"
_XFPREFIX = b"x-forwarded-prefix"
_RELEVANT = frozenset((_FORWARDED, _XFF, _XFPROTO, _XFHOST, _XFPORT, _XFPREFIX))

_HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# A host as it may appear in a Host header (RFC 9110 §7.2 / RFC 3986 §3.2.2): a reg-name
# or IPv4 address, or a bracketed IPv6 literal, then an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+;=%-]+)(?::([0-9]{1,5}))?")

# One forwarded-pair (RFC 7239 §4): token "=" ( token / quoted-string ). Unquoted values
# also take ":" "[" "]" because proxies send for=192.0.2.1:80 unquoted despite the RFC.
_TCHAR = r"!#$%&'*+.^_`|~0-9A-Za-z-"
_PAIR = re.compile(rf'[ \t]*([{_TCHAR}]+)=("(?:[^"\\]|\\.)*"|[{_TCHAR}:\[\]]*)[ \t]*([;,]|$)')
_QUOTED_PAIR = re.compile(r"\\(.)")

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers whose forwarding headers are believed (see the module docstring)."""

    __slots__ = ("_hosts", "_literals", "_networks", "_trusts", "always")

    def __init__(self, allow: Sequence[str] | str) -> None:
        items = allow.split(",") if isinstance(allow, str) else allow
        entries = [item.strip() for item in items if item.strip()]
        self.always = "*" in entries
        hosts: set[_Address] = set()
        networks: list[_Network] = []
        literals: set[str] = set()
        for entry in entries:
            if entry == "*":
                continue
            try:
                if "/" in entry and not entry.startswith("/"):
                    networks.append(ipaddress.ip_network(entry, strict=False))
                else:
                    hosts.add(ipaddress.ip_address(entry))
            except ValueError:
                literals.add(entry)
        self._hosts = frozenset(hosts)
        self._networks = tuple(networks)
        self._literals = frozenset(literals)
        # Peers repeat (the same proxy opens every connection): cache the verdicts.
        self._trusts = functools.lru_cache(maxsize=4096)(self._compute)

    def is_trusted(self, host: str | None) -> bool:
        """Is this peer trusted? None is a UNIX-socket peer."""
        if self.always:
            return True
        if host is None:
            return bool(self._literals)
        if not host:
            return False
        if len(host) > 253:  # longer than any address or DNS name: don't pin it in the cache
            return self._compute(host)
        return self._trusts(host)

    def _compute(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self._literals
        if self._matches(address):
            return True
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return mapped is not None and self._matches(mapped)

    def _matches(self, address: _Address) -> bool:
        return address in self._hosts or any(address in net for net in self._networks)

    def apply(self, scope: MutableMapping[str, Any]) -> None:
        """Rewrite client, scheme, server/Host and root_path/path from a trusted peer."""
        found: dict[bytes, list[bytes]] | None = None
        for name, value in scope["headers"]:
            if name in _RELEVANT:
                if found is None:
                    found = {}
                found.setdefault(name, []).append(value)
        if found is None:
            return
        client = scope.get("client")
        if not self.is_trusted(client[0] if client else None):
            return
        _Forwarding(self, found).apply(scope)


class _Forwarding:
    """The values chosen from one request's forwarding headers."""

    __slots__ = ("client", "host", "port", "prefix", "proto")

    def __init__(self, trust: TrustedProxies, found: dict[bytes, list[bytes]]) -> None:
        self.client: tuple[str, int] | None = None
        self.proto: str | None = None
        self.host: str | None = None
        self.port: int | None = None
        self.prefix: str | None = None
        if _FORWARDED in found:
            self._from_forwarded(trust, found[_FORWARDED])
        self._from_x_forwarded(trust, found)

    def _from_forwarded(self, trust: TrustedProxies, values: list[bytes]) -> None:
        elements = _parse_forwarded(_join(values))
        if not elements:
            return
        index, self.client = _choose(trust, [element.get("for", "") for element in elements])
        element = elements[index]
        self.proto = _scheme(element.get("proto", ""))
        self.host = _valid_host(element.get("host", ""))

    def _from_x_forwarded(self, trust: TrustedProxies, found: dict[bytes, list[bytes]]) -> None:
        hops = _split(found[_XFF]) if _XFF in found else []
        index = -1
        if hops:
            index, client = _choose(trust, hops)
            if self.client is None:
                self.client = client
        if self.proto is None and _XFPROTO in found:
            self.proto = _scheme(_pick(_split(found[_XFPROTO]), hops, index))
        if self.host is None and _XFHOST in found:
            self.host = _valid_host(_pick(_split(found[_XFHOST]), hops, index))
        if _XFPORT in found:
            port = _pick(_split(found[_XFPORT]), hops, index)
            if port.isdigit() and 0 < int(port) <= 65535:
                self.port = int(port)
        if _XFPREFIX in found:
            self.prefix = _valid_prefix(_split(found[_XFPREFIX])[-1:])

    def apply(self, scope: MutableMapping[str, Any]) -> None:
        if self.client is not None:
            scope["client"] = self.client
        if self.proto is not None:
            table = _WS_SCHEMES if scope.get("type") == "websocket" else _HTTP_SCHEMES
            scope["scheme"] = table[self.proto]
        if self.host is not None or self.port is not None:
            self._apply_host(scope)
        if self.prefix is not None:
            scope["root_path"] = self.prefix + scope.get("root_path", "")
            scope["path"] = self.prefix + scope.get("path", "")

    def _apply_host(self, scope: MutableMapping[str, Any]) -> None:
        if self.host is not None:
            hostname, port = _split_host(self.host)
        else:
            current = _header(scope["headers"], b"host")
            server = scope.get("server")
            if current is not None and _HOST.fullmatch(current):
                hostname, port = _split_host(current)
            elif server and server[0]:
                hostname, port = str(server[0]), None
            else:
                return
        if self.port is not None:
            port = self.port
        default = _DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)
        host_value = hostname if port is None or port == default else f"{hostname}:{port}"
        scope["server"] = (hostname.strip("[]"), default if port is None else port)
        encoded = host_value.encode("latin-1")
        scope["headers"] = [(b"host", encoded)] + [
            (name, value) for name, value in scope["headers"] if name != b"host"
        ]


def _join(values: list[bytes]) -> str:
    # Repeated fields are one comma-separated list (RFC 9110 §5.3).
    if len(values) == 1:
        return values[0].decode("latin-1")
    return ",".join(value.decode("latin-1") for value in values)


def _split(values: list[bytes]) -> list[str]:
    text = _join(values)
    if "," not in text:
        return [text.strip()]
    return [item.strip() for item in text.split(",")]


def _choose(trust: TrustedProxies, hops: list[str]) -> tuple[int, tuple[str, int] | None]:
    """The client among hops (appended left to right by each proxy): its index, and its
    address when it is an IP address."""
    if not trust.always:
        for index in range(len(hops) - 1, -1, -1):
            host, port = _parse_node(hops[index])
            if host is None or not trust.is_trusted(host):
                return index, _client_address(host, port)
    # "*", or every hop is a trusted proxy: the leftmost hop is the client.
    return 0, _client_address(*_parse_node(hops[0]))


def _pick(values: list[str], hops: list[str], index: int) -> str:
    if len(values) == len(hops) and index >= 0:
        return values[index]
    return values[-1]


def _parse_node(value: str) -> tuple[str | None, int]:
    """host and port of "1.2.3.4", "1.2.3.4:80", "[::1]:80", "::1"; None when obfuscated
    or "unknown" (RFC 7239 §6)."""
    if len(value) <= 64:  # addresses repeat; long values are garbage not worth caching
        return _parse_node_cached(value)
    return _parse_node_uncached(value)


def _parse_node_uncached(value: str) -> tuple[str | None, int]:
    if not value or value[0] == "_" or value.lower() == "unknown":
        return None, 0
    if value[0] == "[":
        end = value.find("]")
        if end == -1:
            return None, 0
        host, rest = value[1:end], value[end + 1 :]
        if rest and rest[0] != ":":
            return None, 0
        return host, _port(rest[1:])
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, _port(port)
    return value, 0


_parse_node_cached = functools.lru_cache(maxsize=4096)(_parse_node_uncached)


def _port(text: str) -> int:
    # An obfuscated port ("_abc", RFC 7239 §6.3) or garbage reads as unknown: 0.
    return int(text) if text.isdigit() and int(text) <= 65535 else 0


def _client_address(host: str | None, port: int) -> tuple[str, int] | None:
    if host is None or len(host) > 45:  # longer than any IPv6 text form
        return None
    canonical = _canonical_ip(host)
    return None if canonical is None else (canonical, port)


@functools.lru_cache(maxsize=4096)
def _canonical_ip(host: str) -> str | None:
    # Cached: parsing an address costs microseconds and the same clients come back.
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _scheme(value: str) -> str | None:
    value = value.strip().lower()
    return value if value in _DEFAULT_PORTS else None


def _valid_host(value: str) -> str | None:
    value = value.strip()
    if len(value) > 261 or not _HOST.fullmatch(value):
        return None
    _, port = _split_host(value)
    return value if port is None or 0 < port <= 65535 else None


def _split_host(value: str) -> tuple[str, int | None]:
    match = _HOST.fullmatch(value)
    if match is None:
        return value, None
    port = match.group(2)
    return match.group(1), int(port) if port else None


def _valid_prefix(values: list[str]) -> str | None:
    if not values:
        return None
    prefix = unquote(values[0].strip())
    if not prefix.startswith("/") or any(ch < " " or ch in "?#\x7f" for ch in prefix):
        return None
    return prefix.rstrip("/") or None


def _header(headers: Any, wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return bytes(value).decode("latin-1")
    return None


def _parse_forwarded(text: str) -> list[dict[str, str]]:
    """RFC 7239 §4 elements as dicts with lowercase keys; [] when the value is malformed."""
    elements: list[dict[str, str]] = []
    element: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        if text[pos] in " \t,":
            # Empty list elements are allowed (RFC 9110 §5.6.1).
            if text[pos] == "," and element:
                elements.append(element)
                element = {}
            pos += 1
            continue
        match = _PAIR.match(text, pos)
        if match is None:
            return []
        key, value, separator = match.group(1).lower(), match.group(2), match.group(3)
        if key in element:
            return []  # a parameter MUST NOT occur twice in one element (§4)
        if value.startswith('"'):
            value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
        element[key] = value
        pos = match.end()
        if separator == ",":
            elements.append(element)
            element = {}
    if element:
        elements.append(element)
    return elements
