"""Trusted proxies and the forwarding headers they may set (X-Forwarded-*, RFC 7239)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from palfrey.asgi.proxy_headers import TrustedProxies


def scope(
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    client: tuple[str, int] | None = ("127.0.0.1", 1000),
    kind: str = "http",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": kind,
        "scheme": "ws" if kind == "websocket" else "http",
        "client": client,
        "server": ("10.0.0.2", 8000),
        "path": "/users",
        "raw_path": b"/users",
        "root_path": "",
        "headers": [(b"host", b"10.0.0.2:8000"), *(headers or [])],
        **extra,
    }


def applied(allow: list[str] | str, *headers: tuple[str, str], **kwargs: Any) -> dict[str, Any]:
    result = scope([(k.encode(), v.encode()) for k, v in headers], **kwargs)
    TrustedProxies(allow).apply(result)
    return result


# ------------------------------------------------------------------------------- trust


@pytest.mark.parametrize(
    ("allow", "host", "trusted"),
    [
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "127.0.0.2", False),
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["::1"], "::1", True),
        (["::1"], "0:0:0:0:0:0:0:1", True),  # compared as addresses, not strings
        (["2001:db8::/32"], "2001:db8::17", True),
        (["127.0.0.1"], "::ffff:127.0.0.1", True),  # a dual-stack listener's IPv4 peer
        (["*"], "203.0.113.9", True),
        (["proxy.internal"], "proxy.internal", True),
        (["127.0.0.1"], "", False),
        (["127.0.0.1"], "not-an-ip", False),
        ("127.0.0.1, 10.0.0.0/8", "10.9.9.9", True),  # uvicorn's comma-separated string
    ],
)
def test_is_trusted(allow: list[str] | str, host: str, trusted: bool) -> None:
    assert TrustedProxies(allow).is_trusted(host) is trusted


@pytest.mark.parametrize(
    ("allow", "trusted"),
    [(["*"], True), (["/run/app.sock"], True), (["127.0.0.1"], False), ([], False)],
)
def test_unix_socket_peer(allow: list[str], trusted: bool) -> None:
    assert TrustedProxies(allow).is_trusted(None) is trusted
    result = applied(allow, ("x-forwarded-for", "1.2.3.4"), client=None)
    assert result["client"] == (("1.2.3.4", 0) if trusted else None)


def test_untrusted_peer_changes_nothing() -> None:
    before = scope([(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")])
    result = applied(["10.0.0.1"], ("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"))
    assert result == before


def test_no_relevant_headers_changes_nothing() -> None:
    before = scope([(b"accept", b"*/*")])
    result = applied(["*"], ("accept", "*/*"))
    assert result == before


# ---------------------------------------------------------------------- X-Forwarded-*


@pytest.mark.parametrize(
    ("allow", "xff", "client"),
    [
        (["127.0.0.1"], "1.2.3.4", ("1.2.3.4", 0)),
        (["127.0.0.1"], "1.2.3.4:5678", ("1.2.3.4", 5678)),
        (["127.0.0.1"], "[2001:db8::1]:4711", ("2001:db8::1", 4711)),
        (["127.0.0.1"], "2001:db8::1", ("2001:db8::1", 0)),
        # Right to left, to the first hop that is not a trusted proxy.
        (["127.0.0.1", "10.0.0.0/8"], "1.1.1.1, 2.2.2.2, 10.0.0.5", ("2.2.2.2", 0)),
        # Every hop trusted: the leftmost is the client (uvicorn #1068).
        (["127.0.0.1", "10.0.0.0/8"], "10.0.0.1, 10.0.0.5", ("10.0.0.1", 0)),
        # "*": the leftmost, as uvicorn.
        (["*"], "1.1.1.1, 2.2.2.2", ("1.1.1.1", 0)),
        # Garbage leaves the client alone.
        (["127.0.0.1"], "unknown", ("127.0.0.1", 1000)),
        (["127.0.0.1"], "", ("127.0.0.1", 1000)),
        (["127.0.0.1"], "1.2.3.4:99999", ("1.2.3.4", 0)),
    ],
)
def test_x_forwarded_for(allow: list[str], xff: str, client: tuple[str, int]) -> None:
    assert applied(allow, ("x-forwarded-for", xff))["client"] == client


def test_x_forwarded_for_repeated_fields_form_one_list() -> None:
    result = applied(
        ["127.0.0.1", "10.0.0.5"],
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "10.0.0.5"),
    )
    assert result["client"] == ("1.1.1.1", 0)


@pytest.mark.parametrize(
    ("kind", "proto", "scheme"),
    [
        ("http", "https", "https"),
        ("http", "HTTPS ", "https"),
        ("http", "wss", "https"),
        ("websocket", "https", "wss"),
        ("websocket", "http", "ws"),
        ("websocket", "wss", "wss"),
        ("http", "ftp", "http"),
        ("http", "javascript:alert(1)", "http"),
    ],
)
def test_x_forwarded_proto(kind: str, proto: str, scheme: str) -> None:
    assert applied(["127.0.0.1"], ("x-forwarded-proto", proto), kind=kind)["scheme"] == scheme


def test_list_values_follow_the_chosen_hop() -> None:
    result = applied(
        ["127.0.0.1", "10.0.0.5"],
        ("x-forwarded-for", "1.1.1.1, 10.0.0.5"),
        ("x-forwarded-proto", "https, http"),
    )
    assert result["scheme"] == "https"
    # Lists of different lengths: the rightmost value (set by the trusted peer).
    result = applied(["127.0.0.1"], ("x-forwarded-proto", "http, https"))
    assert result["scheme"] == "https"


def test_x_forwarded_host_and_port() -> None:
    result = applied(
        ["127.0.0.1"],
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "example.com"),
    )
    assert (b"host", b"example.com") in result["headers"]
    assert [v for k, v in result["headers"] if k == b"host"] == [b"example.com"]
    assert result["server"] == ("example.com", 443)

    result = applied(["127.0.0.1"], ("x-forwarded-host", "example.com:8080"))
    assert dict(result["headers"])[b"host"] == b"example.com:8080"
    assert result["server"] == ("example.com", 8080)

    result = applied(
        ["127.0.0.1"],
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "example.com"),
        ("x-forwarded-port", "8443"),
    )
    assert dict(result["headers"])[b"host"] == b"example.com:8443"
    assert result["server"] == ("example.com", 8443)


def test_x_forwarded_port_alone_rewrites_the_host_port() -> None:
    result = applied(["127.0.0.1"], ("x-forwarded-port", "9000"))
    assert dict(result["headers"])[b"host"] == b"10.0.0.2:9000"
    assert result["server"] == ("10.0.0.2", 9000)
    result = applied(["127.0.0.1"], ("x-forwarded-proto", "https"), ("x-forwarded-port", "443"))
    assert dict(result["headers"])[b"host"] == b"10.0.0.2"  # default port omitted


@pytest.mark.parametrize(
    "host", ["exa mple.com", "example.com/evil", "a@b", "example.com:x", "[::1", "é.com", ""]
)
def test_bad_forwarded_host_is_ignored(host: str) -> None:
    result = applied(["127.0.0.1"], ("x-forwarded-host", host))
    assert dict(result["headers"])[b"host"] == b"10.0.0.2:8000"
    assert result["server"] == ("10.0.0.2", 8000)


def test_ipv6_forwarded_host() -> None:
    result = applied(["127.0.0.1"], ("x-forwarded-host", "[2001:db8::1]:8080"))
    assert dict(result["headers"])[b"host"] == b"[2001:db8::1]:8080"
    assert result["server"] == ("2001:db8::1", 8080)


@pytest.mark.parametrize(
    ("prefix", "root_path", "path"),
    [
        ("/api", "/api", "/api/users"),
        ("/api/", "/api", "/api/users"),
        ("/a%20b", "/a b", "/a b/users"),
        ("/", "", "/users"),
        ("api", "", "/users"),
        ("/x%0d%0a", "", "/users"),
        ("/x\x01", "", "/users"),
        ("/x?y", "", "/users"),
    ],
)
def test_x_forwarded_prefix(prefix: str, root_path: str, path: str) -> None:
    result = applied(["127.0.0.1"], ("x-forwarded-prefix", prefix))
    assert (result["root_path"], result["path"]) == (root_path, path)
    assert result["raw_path"] == b"/users"


def test_prefix_composes_with_a_configured_root_path() -> None:
    result = applied(
        ["127.0.0.1"], ("x-forwarded-prefix", "/edge"), root_path="/app", path="/app/users"
    )
    assert (result["root_path"], result["path"]) == ("/edge/app", "/edge/app/users")


# ----------------------------------------------------------------- RFC 7239 Forwarded


@pytest.mark.parametrize(
    ("value", "client", "scheme", "host"),
    [
        ("for=192.0.2.60;proto=https;by=203.0.113.43", ("192.0.2.60", 0), "https", None),
        ('for="[2001:db8:cafe::17]:4711"', ("2001:db8:cafe::17", 4711), "http", None),
        ("For=192.0.2.43:47011;PROTO=HTTPS", ("192.0.2.43", 47011), "https", None),
        ('for="192.0.2.43";host="example.com:8443"', ("192.0.2.43", 0), "http", "example.com:8443"),
        ("for=unknown;proto=https", ("127.0.0.1", 1000), "https", None),
        ("for=_hidden;host=example.com", ("127.0.0.1", 1000), "http", "example.com"),
        ("for=192.0.2.43:_port", ("192.0.2.43", 0), "http", None),
        ('for="quoted\\"escape"', ("127.0.0.1", 1000), "http", None),
        # Malformed: ignored as a whole.
        ("for=1.2.3.4;for=5.6.7.8", ("127.0.0.1", 1000), "http", None),
        ("for=1.2.3.4;;proto=https", ("127.0.0.1", 1000), "http", None),
        ('for="1.2.3.4', ("127.0.0.1", 1000), "http", None),
        ("garbage", ("127.0.0.1", 1000), "http", None),
    ],
)
def test_forwarded(value: str, client: tuple[str, int], scheme: str, host: str | None) -> None:
    result = applied(["127.0.0.1"], ("forwarded", value))
    assert result["client"] == client
    assert result["scheme"] == scheme
    assert dict(result["headers"])[b"host"] == (host or "10.0.0.2:8000").encode()


def test_forwarded_walk_takes_proto_and_host_of_the_chosen_element() -> None:
    value = (
        "for=198.51.100.7;proto=https;host=shop.example, for=10.0.0.5;proto=http;host=internal:8080"
    )
    result = applied(["127.0.0.1", "10.0.0.0/8"], ("forwarded", value))
    assert result["client"] == ("198.51.100.7", 0)
    assert result["scheme"] == "https"
    assert dict(result["headers"])[b"host"] == b"shop.example"
    # Only 127.0.0.1 trusted: the element added by our peer describes an untrusted hop.
    result = applied(["127.0.0.1"], ("forwarded", value))
    assert result["client"] == ("10.0.0.5", 0)
    assert result["scheme"] == "http"


def test_forwarded_wins_over_x_forwarded() -> None:
    result = applied(
        ["127.0.0.1"],
        ("x-forwarded-for", "5.5.5.5"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "x.example"),
        ("forwarded", "for=1.1.1.1;proto=https"),
    )
    assert result["client"] == ("1.1.1.1", 0)
    assert result["scheme"] == "https"
    # Forwarded named no host: X-Forwarded-Host fills the gap.
    assert dict(result["headers"])[b"host"] == b"x.example"


def test_malformed_forwarded_falls_back_to_x_forwarded() -> None:
    result = applied(["127.0.0.1"], ("forwarded", "for=="), ("x-forwarded-for", "5.5.5.5"))
    assert result["client"] == ("5.5.5.5", 0)


def test_never_raises_on_random_input() -> None:
    rng = random.Random(7239)
    alphabet = b'for=proto;host,"[]:_\\ \t1.2:3ab\xff\x00/%?#'
    names = [
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
    ]
    proxies = [TrustedProxies(["*"]), TrustedProxies(["127.0.0.1", "10.0.0.0/8", "x"])]
    for _ in range(3000):
        headers = [
            (rng.choice(names), bytes(rng.choice(alphabet) for _ in range(rng.randrange(30))))
            for _ in range(rng.randrange(1, 4))
        ]
        for trust in proxies:
            trust.apply(scope(headers, kind=rng.choice(["http", "websocket"])))
