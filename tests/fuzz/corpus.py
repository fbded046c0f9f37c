"""A fixed-seed mutation corpus of HTTP/1.1 request streams.

`generate(seed, count)` yields `count` byte strings, the same ones for the same seed on
every machine (only `random.Random(seed)` decides). Each is one connection's worth of
bytes: one to three requests built from parts known to be interesting (request lines,
Host, Content-Length and Transfer-Encoding combinations, Connection/Upgrade token lists,
WebSocket and h2c upgrade fields, chunk sizes and extensions, trailers, leading empty
lines), then, for most inputs, one to three byte-level mutations (a byte inserted, deleted
or replaced by SP, HTAB, CR, LF, ":", ",", ";", NUL, DEL, obs-text...; a CRLF turned into
a bare LF or CR; a line duplicated, dropped or swapped; a letter's case flipped; the
stream truncated). About a third of the requests are built from valid parts only, so
that what follows a tricky request is often a request any server would serve, which is
what shows a desync. The issue's reproducers come first.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

HOST = b"Host: a.example\r\n"

# The issue-10 reproducers, verbatim: every run starts with them.
REPRODUCERS: tuple[bytes, ...] = (
    b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
    b"Content-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: xupgrade\r\nUpgrade: websocket\r\n\r\n"
    b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-Injected: 1\r\nHost: evil\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n"
    + b"x" * 3000
    + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET  /bad HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET  /b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab  cd  ef"
    b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nx  y",
    b"POST / HTTP/1.1\r\nHost: a\r\nX-V: HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"FOO /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://[::1/first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n",
)

_METHODS = (
    [b"GET"] * 8
    + [b"POST"] * 8
    + [b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PATCH", b"PROPFIND", b"QUERY", b"PURGE"]
    + [b"CONNECT", b"PURGE-X", b"get", b"G(T", b"DESCRIBE", b"SOURCE", b"PRI", b""]
)
_TARGETS = (
    [b"/"] * 6
    + [b"/a", b"/a/b?c=d", b"/p%20q", b"/%ff", b"/a?b#c", b"/a#c", b"//x", b"/?", b"/a;b"]
    + [b"*", b"http://h.example/abs?q=1", b"https://h.example", b"http://h.example?x"]
    + [b"http://[::1]/v6", b"http://[::1/first", b"http://u@h.example/", b"http:///x"]
    + [b"HTTP://H/x", b"h.example:80", b"a", b"?x", b"/\x7f", b"/\xc3\xa9", b"/a\tb", b""]
)
_VERSIONS = (
    [b"HTTP/1.1"] * 12
    + [b"HTTP/1.0"] * 3
    + [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"RTSP/1.0", b"ICE/1.0"]
    + [b"HTTP/1.10", b"HTTP/1", b"HTTP/11", b"HTTP/1.1 ", b""]
)
_SEPARATORS = [b" "] * 12 + [b"  ", b"\t", b" \t", b""]
_HOSTS = (
    [HOST] * 10
    + [b"Host: a.example:8080\r\n", b"Host: [::1]:80\r\n", b"Host:\r\n", b"Host: \t a \t\r\n"]
    + [b"Host: a b\r\n", b"Host: u@a\r\n", b"Host: a/b\r\n", b"Host: [::1\r\n"]
    + [HOST + HOST, HOST + b"host: b\r\n", b""]
)
_LENGTHS = [
    b"Content-Length: %d\r\n",
    b"Content-Length: %d\r\n",
    b"Content-Length:  %d \t\r\n",
    b"content-length: %d\r\n",
    b"Content-Length: %d\r\nContent-Length: %d\r\n",
    b"Content-Length: %d, %d\r\n",
    b"Content-Length: +%d\r\n",
    b"Content-Length: 0x%d\r\n",
    b"Content-Length: %d\x0b\r\n",
    b"Content-Length : %d\r\n",
]
_CODINGS = [
    b"chunked",
    b"chunked",
    b"chunked",
    b"Chunked",
    b"CHUNKED",
    b"chunked\t",
    b"\tchunked ",
    b"gzip, chunked",
    b"chunked, chunked",
    b"identity",
    b"chunked, identity",
    b"xchunked",
    b'"chunked"',
    b"",
    b"chunked\x0b",
]
_CONNECTIONS = [
    b"close",
    b"keep-alive",
    b"Upgrade",
    b"upgrade",
    b"keep-alive, Upgrade",
    b"keep-alive,upgrade",
    b"Upgrade, HTTP2-Settings",
    b"xupgrade",
    b"upgradex",
    b"up grade",
    b"close, upgrade",
    b",,upgrade,,",
    b"",
]
_UPGRADES = [
    b"websocket",
    b"WebSocket",
    b"foo",
    b"h2c",
    b"websocket, foo",
    b"foo, websocket",
    b"websocketx",
    b"h2c, websocket",
    b"",
]
_FIELDS = [
    b"X-Plain: value\r\n",
    b"X-Ows: \t padded \t\r\n",
    b"X-Empty:\r\n",
    b"X-Latin: caf\xe9\r\n",
    b"X-Ctl: a\x01b\r\n",
    b"X-Nul: a\x00b\r\n",
    b"X-Del: a\x7fb\r\n",
    b"X-Vt: a\x0bb\r\n",
    b"Bad Name: v\r\n",
    b"X-Space : v\r\n",
    b"X@At: v\r\n",
    b": empty-name\r\n",
    b"NoColon\r\n",
    b"X-Fold: a\r\n b\r\n",
    b"Expect: 100-continue\r\n",
    b"Trailer: X-T\r\n",
    b"TE: trailers\r\n",
    b"X-Long: " + b"l" * 300 + b"\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    b"X-Smuggle: 0\r\n\r\nGET /smuggled HTTP/1.1\r\n",
]
_CHUNK_EXTS = [
    b"",
    b"",
    b"",
    b";a=b",
    b';q="x y"',
    b";flag",
    b"; a=b",
    b";",
    b';a="x',
    b" ",
    b";\rx",
]
_TRAILERS = [
    b"",
    b"",
    b"X-T: 1\r\n",
    b"X-Injected: 1\r\nHost: evil\r\n",
    b"Content-Length: 99\r\n",
    b"Bad Name: v\r\n",
    b"X-Fold: a\r\n b\r\n",
    b"X-Lf: a\n",
]
_INTERESTING = [b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b",", b";", b"\x00", b"\x7f", b"\x80"]
_INTERESTING += [b"\xff", b"0", b"9", b"a", b"F", b"/", b"?", b"#", b"[", b"]", b"@", b'"']


def generate(seed: int, count: int) -> Iterator[bytes]:
    """`count` request streams, fixed by `seed` (the reproducers come first)."""
    rng = random.Random(seed)
    for index in range(count):
        if index < len(REPRODUCERS):
            yield REPRODUCERS[index]
            continue
        data = b"".join(
            _request(rng, last=i == 0) for i in reversed(range(rng.choice((1, 1, 2, 2, 3))))
        )
        if rng.random() < 0.15:
            data = rng.choice((b"\r\n", b"\r\n\r\n", b"\n", b"\r")) + data
        if rng.random() < 0.7:
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                data = _mutate(rng, data)
        yield data


# Valid choices only: a share of requests is built from these, so that a request that
# follows a malformed or tricky one is often valid and would be served if smuggled.
_VALID_METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]
_VALID_TARGETS = [b"/", b"/a", b"/a/b?c=d", b"/p%20q", b"http://h.example/abs?q=1"]
_VALID_VERSIONS = [b"HTTP/1.1"] * 4 + [b"HTTP/1.0"]
_VALID_CONNECTIONS = [b"keep-alive", b"Upgrade", b"keep-alive, Upgrade", b"xupgrade"]
_VALID_UPGRADES = [b"foo", b"h2c", b"websocketx"]
_VALID_FIELDS = [b"X-Plain: value\r\n", b"X-Ows: \t padded \t\r\n", b"X-Latin: caf\xe9\r\n"]


def _request(rng: random.Random, *, last: bool) -> bytes:
    if rng.random() < 0.35:
        return _valid_request(rng, last=last)
    method = rng.choice(_METHODS)
    version = rng.choice(_VERSIONS)
    line = (
        method + rng.choice(_SEPARATORS) + rng.choice(_TARGETS) + rng.choice(_SEPARATORS) + version
    )
    fields = [rng.choice(_HOSTS)]
    body_kind = rng.choice(("none", "none", "length", "length", "chunked", "chunked", "both"))
    body = b""
    if body_kind in ("length", "both"):
        content = rng.choice(
            (b"", b"hello", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", b"x" * 700)
        )
        template = rng.choice(_LENGTHS)
        count = template.count(b"%d")
        lengths = [len(content)] + [rng.choice((len(content), 0, 5)) for _ in range(count - 1)]
        fields.append(template % tuple(lengths))
        body = content
    if body_kind in ("chunked", "both"):
        fields.append(b"Transfer-Encoding: " + rng.choice(_CODINGS) + b"\r\n")
        body = _chunked(rng) if body_kind == "chunked" else body
    if rng.random() < 0.35:
        fields.append(b"Connection: " + rng.choice(_CONNECTIONS) + b"\r\n")
    if rng.random() < 0.3:
        fields.append(b"Upgrade: " + rng.choice(_UPGRADES) + b"\r\n")
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        fields.append(rng.choice(_FIELDS))
    if rng.random() < 0.05:
        fields.extend(b"X-N-%d: n\r\n" % n for n in range(rng.choice((14, 15, 16))))
    rng.shuffle(fields)
    if last and rng.random() < 0.5:
        fields.append(b"Connection: close\r\n")
    return line + b"\r\n" + b"".join(fields) + b"\r\n" + body


def _valid_request(rng: random.Random, *, last: bool) -> bytes:
    """A request any strict server serves (an Upgrade in it is one nobody takes)."""
    version = rng.choice(_VALID_VERSIONS)
    line = rng.choice(_VALID_METHODS) + b" " + rng.choice(_VALID_TARGETS) + b" " + version
    fields = [HOST]
    body = rng.choice((b"", b"", b"hello", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"))
    if body or rng.random() < 0.3:
        if version == b"HTTP/1.1" and rng.random() < 0.5:
            fields.append(b"Transfer-Encoding: chunked\r\n")
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        else:
            fields.append(b"Content-Length: %d\r\n" % len(body))
    if version == b"HTTP/1.0" and not last:
        fields.append(b"Connection: keep-alive\r\n")  # RFC 9112 §9.3: else it closes
    elif rng.random() < 0.3:
        fields.append(b"Connection: " + rng.choice(_VALID_CONNECTIONS) + b"\r\n")
        fields.append(b"Upgrade: " + rng.choice(_VALID_UPGRADES) + b"\r\n")
    fields += rng.sample(_VALID_FIELDS, rng.choice((0, 1, 2)))
    rng.shuffle(fields)
    if last and rng.random() < 0.5:
        fields.append(b"Connection: close\r\n")
    return line + b"\r\n" + b"".join(fields) + b"\r\n" + body


def _chunked(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        data = rng.choice((b"hello", b"x" * 20, b"0\r\n\r\n", b"GET /smuggled HTTP/1.1\r\n\r\n"))
        size = rng.choice(
            (b"%x" % len(data), b"%X" % len(data), b"00%x" % len(data), b"%x" % (len(data) + 1))
        )
        if rng.random() < 0.05:
            size = rng.choice((b"-5", b"0x5", b"", b" 5", b"10000000000000000", b"zz"))
        ending = b"\r\n" if rng.random() < 0.95 else rng.choice((b"\n", b"XX", b""))
        parts.append(size + rng.choice(_CHUNK_EXTS) + b"\r\n" + data + ending)
    last = b"0" + rng.choice(_CHUNK_EXTS) + b"\r\n" + rng.choice(_TRAILERS) + b"\r\n"
    return b"".join(parts) + last


def _mutate(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    kind = rng.randrange(9)
    at = rng.randrange(len(data))
    if kind == 0:
        return data[:at] + rng.choice(_INTERESTING) + data[at:]
    if kind == 1:
        return data[:at] + data[at + 1 :]
    if kind == 2:
        return data[:at] + rng.choice(_INTERESTING) + data[at + 1 :]
    if kind == 3:
        return _line_end(rng, data)
    if kind == 4:
        return _lines(rng, data)
    if kind == 5:
        byte = data[at : at + 1]
        return data[:at] + byte.swapcase() + data[at + 1 :]
    if kind == 6:
        return data[: max(at, 1)]
    if kind == 7:
        return data[:at] + rng.choice((b"\r\n", b"\r\n\r\n", b"0\r\n\r\n")) + data[at:]
    return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]


def _line_end(rng: random.Random, data: bytes) -> bytes:
    ends = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\r\n"]
    if not ends:
        return data
    at = rng.choice(ends)
    return data[:at] + rng.choice((b"\n", b"\r", b"\r\r\n", b"\n\r")) + data[at + 2 :]


def _lines(rng: random.Random, data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    if len(lines) < 3:
        return data
    at = rng.randrange(1, len(lines) - 1)
    choice = rng.randrange(3)
    if choice == 0:
        lines.insert(at, lines[at])
    elif choice == 1:
        del lines[at]
    else:
        other = rng.randrange(1, len(lines) - 1)
        lines[at], lines[other] = lines[other], lines[at]
    return b"\r\n".join(lines)
