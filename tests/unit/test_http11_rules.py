"""The sans-IO HTTP/1.1 rules: request framing checks and response head encoding."""

from __future__ import annotations

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
    ProtocolError,
    check_raw_head,
    check_request_line,
    inspect_headers,
)
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
def test_raw_head_checks(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        check_raw_head(head, LIMITS)


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
