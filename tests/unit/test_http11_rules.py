"""The sans-IO HTTP/1.1 rules: request framing checks and response head encoding."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from palfrey.protocols import http11_response
from palfrey.protocols.http11_response import (
    DefaultHeaders,
    HeaderSettings,
    encode_head,
    status_line,
)
from palfrey.protocols.limits import (
    HeadScanner,
    ProtocolError,
    check_request_line,
    inspect_headers,
    origin_form,
    refusal,
)
from palfrey.protocols.negotiation import _H2C, _settings_field
from palfrey.protocols.tokens import field_has_token, tokens
from palfrey.protocols.websocket_core import wants_websocket
from tests.helpers.plans import make_plan

LIMITS = make_plan().connections.limits


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"content-length", b"1"), (b"content-length", b"1")], 400),
        ([(b"content-length", b"1"), (b"transfer-encoding", b"chunked")], 400),
        ([(b"content-length", b"-1")], 400),
        ([(b"transfer-encoding", b"gzip, chunked")], 501),
        ([(b"transfer-encoding", b"chunked, chunked")], 400),
        ([(b"host", b"a"), (b"host", b"b")], 400),
        ([(b"host", b"user@a")], 400),
    ],
)
def test_ambiguous_framing_is_refused(headers: list[tuple[bytes, bytes]], status: int) -> None:
    headers = [(b"host", b"a"), *headers] if headers[0][0] != b"host" else headers
    with pytest.raises(ProtocolError) as info:
        inspect_headers(headers, True)
    assert info.value.status == status


def test_framing_and_connection_options() -> None:
    framing = inspect_headers(
        [(b"host", b"a"), (b"transfer-encoding", b"Chunked"), (b"expect", b"100-continue")], True
    )
    assert framing.chunked
    assert framing.expect_continue
    assert framing.keep_alive
    assert not inspect_headers([(b"connection", b"close"), (b"host", b"a")], True).keep_alive
    assert inspect_headers([(b"connection", b"keep-alive")], False).keep_alive
    with pytest.raises(ProtocolError):
        inspect_headers([], True)  # HTTP/1.1 needs Host


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ((b"GET", b"/", "2.0"), 505),
        ((b"PRI", b"*", "2.0"), 505),
        ((b"GET", b"*", "1.1"), 400),
        ((b"FOO", b"/", "1.1"), 501),
        ((b"CONNECT", b"a:1", "1.1"), 405),
    ],
)
def test_request_line(line: tuple[bytes, bytes, str], status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        check_request_line(*line)
    assert info.value.status == status
    assert check_request_line(b"GET", b"/", "1.2") == "1.1"


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",
    ],
)
def test_refusal_of_heads_h11_would_normalise(head: bytes) -> None:
    assert refusal(head, LIMITS).status == 400


def test_encode_head_framing() -> None:
    defaults = DefaultHeaders(
        HeaderSettings(server_header=True, date_header=False, extra=(("X-A", "1"),))
    )
    head = encode_head(
        200,
        [(b"content-type", b"text/plain")],
        defaults,
        http11=True,
        keep_alive=True,
        body_allowed=True,
        body_length=5,
    )
    assert head.data == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n"
        b"server: palfrey\r\nx-a: 1\r\n\r\n"
    )
    streamed = encode_head(
        200,
        [(b"Server", b"app")],
        defaults,
        http11=True,
        keep_alive=True,
        body_allowed=True,
        body_length=None,
    )
    assert streamed.chunked
    assert b"server: palfrey" not in streamed.data
    old = encode_head(
        200, [], defaults, http11=False, keep_alive=True, body_allowed=True, body_length=None
    )
    assert not old.chunked
    assert not old.keep_alive
    assert old.data.startswith(b"HTTP/1.0 200 OK")
    with pytest.raises(RuntimeError):
        encode_head(
            200,
            [(b"x", b"a\r\nb")],
            defaults,
            http11=True,
            keep_alive=True,
            body_allowed=True,
            body_length=None,
        )
    assert status_line(599) == b"HTTP/1.1 599 \r\n"


def test_encode_head_reuses_checked_fields_without_changing_the_bytes() -> None:
    # Ordinary fields are checked and encoded once, then reused; the bytes never differ
    # from a first encoding, and special fields are still read on every response.
    defaults = DefaultHeaders(HeaderSettings(server_header=False, date_header=False, extra=()))

    def head(headers: list[Any]) -> bytes:
        encoded = encode_head(
            200,
            headers,
            defaults,
            http11=True,
            keep_alive=True,
            body_allowed=True,
            body_length=None,
        )
        return encoded.data

    fields = [(b"content-type", b"text/plain"), (b"X-Trace", b"a  b")]
    first = head(fields)
    assert head(list(fields)) == first
    assert (b"X-Trace", b"a  b") in defaults.plain_lines
    # A list pair or a bytearray value is valid ASGI, just not a cache key.
    assert head([[b"content-type", b"text/plain"], (b"X-Trace", bytearray(b"a  b"))]) == first
    closing = encode_head(
        200,
        [*fields, (b"connection", b"close")],
        defaults,
        http11=True,
        keep_alive=True,
        body_allowed=True,
        body_length=None,
    )
    assert not closing.keep_alive
    assert b"connection: close" in closing.data
    with pytest.raises(RuntimeError, match="invalid HTTP header value"):
        head([(b"content-type", b"text/plain"), (b"x-bad", b"a\nb")])
    # Bounded: unique per-response values empty the table instead of growing it.
    for index in range(http11_response._PLAIN_LINES_MAX + 10):
        head([(b"x-request-id", b"%d" % index)])
    assert len(defaults.plain_lines) <= http11_response._PLAIN_LINES_MAX


# -- token lists (RFC 9110 §5.6.1): one reading for Connection, Upgrade, h2c -------------


def test_token_lists() -> None:
    assert tokens(b" keep-alive ,\tUpgrade,,") == [b"keep-alive", b"upgrade"]
    assert tokens(b"") == []
    headers = [(b"connection", b"keep-alive"), (b"connection", b"Upgrade")]
    assert field_has_token(headers, b"connection", b"upgrade")  # fields combine (§5.3)
    assert not field_has_token([(b"connection", b"xupgrade")], b"connection", b"upgrade")


@pytest.mark.parametrize(
    ("connection", "upgrade", "wanted"),
    [
        (b"Upgrade", b"websocket", True),
        (b"keep-alive,upgrade", b"WebSocket", True),
        (b"keep-alive, Upgrade", b"foo, websocket", True),
        (b"xupgrade", b"websocket", False),  # a substring is not a token
        (b"upgradex", b"websocket", False),
        (b"up grade", b"websocket", False),
        (b"upgrade", b"websocketx", False),
        (b"upgrade", b"foo", False),
    ],
)
def test_websocket_request_is_read_as_token_lists(
    connection: bytes, upgrade: bytes, wanted: bool
) -> None:
    headers = [(b"host", b"a"), (b"connection", connection), (b"upgrade", upgrade)]
    assert wants_websocket(headers) is wanted


@pytest.mark.parametrize(
    ("connection", "upgrade", "wanted"),
    [
        (b"Upgrade, HTTP2-Settings", b"h2c", True),
        (b"keep-alive,upgrade , http2-settings", b"foo, h2c", True),
        (b"Upgrade", b"h2c", False),  # HTTP2-Settings must be listed too (RFC 7540 §3.2.1)
        (b"xupgrade, HTTP2-Settings", b"h2c", False),
        (b"Upgrade, HTTP2-Settings", b"h2cx", False),
    ],
)
def test_h2c_request_is_read_as_token_lists(
    connection: bytes, upgrade: bytes, wanted: bool
) -> None:
    settings = b"AAMAAABkAARAAAAAAAIAAAAA"
    headers = [
        (b"host", b"a"),
        (b"connection", connection),
        (b"upgrade", upgrade),
        (b"http2-settings", settings),
    ]
    assert (_settings_field(headers) == settings) is wanted
    head = b"GET / HTTP/1.1\r\nUpgrade: " + upgrade + b"\r\n\r\n"
    assert _H2C(head) is not None or not wanted  # the quick look never misses one


# -- absolute-form targets (RFC 9112 §3.2.2, RFC 9110 §4.2) ----------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"http://[::1/first",  # unterminated IP literal
        b"http:///x",  # empty host
        b"http://:80/x",
        b"http://u@h/x",  # userinfo
        b"http://h x/",
        b"ftp://h/x",
        b"http:/h/x",
        b"http://h#f/x",  # a fragment, here ending the authority
        b"http://h/x#f",
        b"/a#f",  # origin-form has no fragment either (RFC 9112 §3.2)
    ],
)
def test_invalid_absolute_form_is_refused(target: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        check_request_line(b"GET", target, "1.1")
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("target", "origin"),
    [
        (b"http://h/a?b", b"/a?b"),
        (b"HTTPS://h:8443", b"/"),
        (b"http://[::1]:80/x", b"/x"),
        (b"http://h?q=1", b"/?q=1"),
    ],
)
def test_absolute_form_origin(target: bytes, origin: bytes) -> None:
    assert check_request_line(b"GET", target, "1.1") == "1.1"
    assert origin_form(target) == origin


# -- heads as they arrive: the earliest problem decides, whatever the reads ----------

_SMALL = replace(LIMITS, max_head_size=200, max_request_line=40, max_header_count=3)
_BAD_HEADS = [
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",  # bare LF in a field
    b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",  # bare CR
    b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",  # obs-fold
    b"GET  / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",  # bad line before a bad value
    b"FOO /a b HTTP/1.1\r\nHost: a\r\n\r\n",  # malformed line with an unknown method: 400
    b"FOO /a HTTP/1.1\r\nHost: a\r\n\r\n",  # valid line, unknown method: 501
    b"GET / HTTP/2.0\r\nHost: a\nX: b\r\n\r\n",  # 505 at the line, before the bare LF
    b"GET /" + b"a" * 50 + b" HTTP/1.1\r\nHost: a\n\r\n",  # 414 before the bare LF
    b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD\n: 4\r\n\r\n",  # 431 first
    b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",  # too many fields
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 200 + b"\n\r\n",  # 431 before the LF
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 120 + b"\n\r\n",  # LF before 431
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",  # 501
    b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\r\n\r\n",  # no Host
]


def _scan(pieces: list[bytes]) -> int | None:
    """The status the scanner answers for `pieces` as reads, else that of `refusal` on
    the complete head (what a parser refusing it gets)."""
    scanner = HeadScanner(_SMALL)
    try:
        for piece in pieces:
            stop = scanner.feed(piece)
            if stop >= 0:
                return refusal(bytes(scanner.buffer[:stop]), _SMALL).status
    except ProtocolError as exc:
        return exc.status
    return None


@pytest.mark.parametrize("head", _BAD_HEADS)
def test_a_head_gets_one_status_whatever_the_reads(head: bytes) -> None:
    status = refusal(head, _SMALL).status
    assert _scan([head]) == status
    for cut in range(1, len(head)):
        assert _scan([head[:cut], head[cut:]]) == status, cut
    assert _scan([head[i : i + 1] for i in range(len(head))]) == status


def test_statuses_of_the_bad_heads() -> None:
    statuses = [refusal(head, _SMALL).status for head in _BAD_HEADS]
    assert statuses == [400, 400, 400, 400, 400, 501, 505, 414, 431, 431, 431, 400, 501, 400, 400]


def test_empty_lines_before_a_request() -> None:
    scanner = HeadScanner(_SMALL)
    assert scanner.feed(b"\r\n\r") == -1
    assert not scanner.started  # only empty lines so far
    assert scanner.feed(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == 27
    for prefix in (b"\r\r\n", b"\n", b"\rG", b"\r\n\n"):
        with pytest.raises(ProtocolError) as info:
            HeadScanner(_SMALL).feed(prefix + b"GET / HTTP/1.1\r\n")
        assert info.value.status == 400
