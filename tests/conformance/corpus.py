"""The malformed-request corpus: raw HTTP/1.1 bytes and what a strict server must answer.

Every case is sent byte for byte over loopback to both HTTP/1.1 backends (h11 and
httptools); see test_http11_malformed.py for the assertions. Rules the corpus encodes
(SPEC §3; RFC 9110 = HTTP semantics, RFC 9112 = HTTP/1.1):

* A rejected request gets exactly one response with the expected 4xx/5xx status (never a
  500), carrying "Connection: close", and then the server closes the connection. Every
  rejected case whose framing could be misread ends with a complete second request for
  /smuggled; the app records each path it is called for and /smuggled must never appear.
* An accepted case must be answered, in order, by the echo app (see `Echo`).

Decisions where the RFCs leave a choice (each is pinned to one deterministic answer):

* Bare LF as a line terminator: RFC 9112 §2.2 lets a recipient accept it; Palfrey rejects
  it with 400 everywhere (request line, fields, chunk lines, trailers).
* Duplicate Content-Length, even with equal values (two lines or "5, 5"): RFC 9110 §8.6
  and RFC 9112 §6.3 (4) allow rejecting; SPEC §3 says reject: 400.
* Content-Length and Transfer-Encoding together: RFC 9112 §6.1 allows rejecting; we
  reject: 400 (and RFC 9112 §6.1 requires closing in any case).
* A Transfer-Encoding whose final coding is not "chunked" (unknown codings, "gzip" alone,
  "chunked, identity", "xchunked", an empty value): RFC 9112 §6.3 (3) MUST 400. A list
  ending in chunked with an earlier coding we do not implement ("gzip, chunked"):
  RFC 9112 §6.1 SHOULD 501. "chunked" twice (RFC 9112 §6.1 MUST NOT): 400.
* Transfer-coding names are case-insensitive (RFC 9112 §7): "Chunked" is chunked. Leading
  and trailing SP/HTAB around a field value is OWS (RFC 9112 §5), so
  "Transfer-Encoding:\\tchunked\\t" and "Content-Length:  5 " are valid and accepted;
  other whitespace (VT, FF) or interior whitespace is not: 400.
* obs-fold (RFC 9112 §5.2 reject-or-replace): reject, 400. Other CTLs in a field value
  (RFC 9110 §5.5 MAY keep): reject, 400. obs-text (%x80-FF) in a value is valid: accepted.
* Request-line whitespace (RFC 9112 §3 MAY be lenient): strict, single SP only, 400.
* A higher minor version, "HTTP/1.2" (RFC 9110 §2.5 SHOULD process as the highest
  supported minor): accepted and handed to the app as "1.1".
* A request line with major version 2 ("GET / HTTP/2.0") and the HTTP/2 connection
  preface when HTTP/2 is off: 505 (RFC 9110 §15.6.6), then close. One rule for both, so
  the answer does not depend on how the parser recognises the preface.
* Absolute-form with a Host that differs: accepted; the target's authority wins
  (RFC 9112 §3.2.2) and scope["path"] is the target's path.
* "*" with any method but OPTIONS (RFC 9112 §3.2.4): 400.
* Limits: request line longer than http.max_request_line (method SP target SP version,
  CRLF excluded): 414; head over http.max_head_size or more than http.max_header_count
  fields: 431 (RFC 6585 §5); body over limits.max_body_size: 413, for a declared
  Content-Length before any body is read. Chunk sizes or Content-Length values too large
  to represent: 400 (RFC 9112 §7.1, RFC 9110 §8.6 "prevent ... overflows").
* Header-read timeout (slowloris): a partial head gets 408 (RFC 9110 §15.5.9) and a
  close after timeouts.header_read (not before 80% of it, not after it plus SLACK); the
  deadline covers the whole head (dribbling a byte at a time does not extend it); a
  connection that sends nothing is closed silently (no response) within the same window.
* Methods: a registered method llhttp knows (PROPFIND) reaches the app; a syntactically
  valid but unrecognised token (PURGE-X) gets 501 (RFC 9110 §9.1 SHOULD), the same on
  both backends (llhttp cannot parse arbitrary methods); a non-token method is 400.
* Not pinned: BWS before ";" in a chunk extension ("5 ;a=b"), which RFC 9112 §7.1.1
  allows but both h11 and llhttp reject.
* 1xx: no "100 Continue" may precede a rejection (RFC 9110 §10.1.1).

What uvicorn 0.54 gets wrong (CONFORMANCE_SERVER=uvicorn; h11 0.16, httptools 0.9;
uvicorn has no request-line/head/count/body limits or header-read timeout, so every
limit and timeout case fails on both backends and is not repeated below; 163 of 232 pass).
"[200, 200]" means the malformed request was served and so was the pipelined /smuggled.

  h11 backend
    cl-then-te, te-then-cl, cl-te-chunk-body, pipelined-valid-then-cl-te: framed by TE
      but the connection is kept open (RFC 9112 §6.1 MUST close): /smuggled served.
    cl-duplicate-same, cl-list-same: merged and served, /smuggled served.
    bare-lf-everywhere, bare-lf-one-field, bare-lf-end-of-head, obs-fold-space,
      obs-fold-tab, value-control-char: accepted, /smuggled served.
    chunk-size-trailing-space, chunk-ext-bare-cr, trailer-bare-lf: accepted (h11's chunk
      line regex is "[0-9A-Fa-f]{1,20}(;.*)?[ \t]*\r\n"), /smuggled served.
    chunk-size-overflow: h11 takes up to 20 hex digits; the server waits for 2**64 bytes.
    te-gzip-then-chunked: 400, not 501. te-http10: served.
    host-inner-space, host-userinfo, host-with-path, host-bad-port: served.
    line-http2-version: served to the app as HTTP/2.0; h2-preface-h2-off: "PRI *" is
      served to the app (200), then 400 for "SM".
    line-asterisk-not-options, line-unknown-method-token: served.
    leading-empty-line: 400. http12-minor-version: scope http_version is "1.2".
    absolute-form-other-host: scope path is "http://other.example/abs".
    head-over-limit, single-field-over-limit: h11_max_incomplete_event_size=4096 is set
      but only checked while a head is incomplete; a 6 KiB head in one segment passes.
  httptools backend
    te-gzip-then-chunked: served, /smuggled served. te-http10: served.
    host-missing, host-duplicate, host-inner-space, host-userinfo, host-with-path,
      host-bad-port: served, /smuggled served.
    line-missing-version: "GET /" answered 200 as HTTP/0.9.
    line-http2-version: served (200). h2-preface-h2-off: 400 (not 505).
    line-double-space, line-asterisk-not-options: served, /smuggled served.
    line-unknown-method-token: 400 (not 501).
    pipelined-valid-then-cl-te, pipelined-valid-then-bad-chunk: only the 400 arrives;
      the 200s owed to the valid requests before it are never sent.
    te-chunked-ows-tabs: 400 (llhttp rejects "chunked\t"). http12-minor-version: 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

SMUGGLED_PATH: Final = "/smuggled"
SMUGGLED: Final = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"

HOST: Final = b"Host: example.com\r\n"

#: Limits small enough to test quickly (each is within the model's bounds).
LINE_LIMIT: Final = 1024
HEAD_LIMIT: Final = 4096
COUNT_LIMIT: Final = 20
BODY_LIMIT: Final = 1024
HEADER_READ: Final = 0.5
#: How late after timeouts.header_read a close still counts as on time (a loaded CI box).
SLACK: Final = 1.5

LIMITS: Final[Mapping[str, Mapping[str, Any]]] = {
    "http": {
        "max_request_line": LINE_LIMIT,
        "max_head_size": HEAD_LIMIT,
        "max_header_count": COUNT_LIMIT,
    }
}
BODY: Final[Mapping[str, Mapping[str, Any]]] = {"limits": {"max_body_size": BODY_LIMIT}}
_TIMEOUT_WINDOW: Final = (0.8 * HEADER_READ, HEADER_READ + SLACK)
SLOW: Final[Mapping[str, Mapping[str, Any]]] = {"timeouts": {"header_read": HEADER_READ}}


@dataclass(frozen=True)
class Echo:
    """One request the echo app must have answered: it replies 200 with the body
    f"{method} {path} {http_version} {len(body)}\\n" followed by the request body."""

    path: str
    method: str = "GET"
    body: bytes = b""
    http_version: str = "1.1"
    headers: tuple[tuple[bytes, bytes], ...] | None = None
    """When set: exactly the header fields the app must get (names lower-case)."""

    def expected_body(self) -> bytes:
        if self.method == "HEAD":
            return b""
        line = f"{self.method} {self.path} {self.http_version} {len(self.body)}\n"
        return line.encode("latin-1") + self.body


@dataclass(frozen=True)
class Accepted:
    """The request(s) must be served, in this order."""

    responses: tuple[Echo, ...]


@dataclass(frozen=True)
class SilentClose:
    """The server must close the connection without sending anything."""


@dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    expect: int | Accepted | SilentClose
    rfc: str
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dribble: float | None = None
    """Send one byte every `dribble` seconds (slowloris)."""
    within: tuple[float, float] | None = None
    """The server must close between these many seconds after the connect (not before:
    a slow but legitimate client must get the whole timeout)."""
    deadline: float = 2.5
    """How long the client waits for the server to close."""
    answered_first: tuple[Echo, ...] = ()
    """Valid pipelined requests that must be served, in order, before the rejected one."""
    splits: tuple[tuple[int, ...], ...] = ()
    """Writes the boundary test must also try (offsets into `raw`), beside its own."""

    @property
    def methods(self) -> tuple[str, ...]:
        if isinstance(self.expect, Accepted):
            return tuple(echo.method for echo in self.expect.responses)
        return tuple(echo.method for echo in self.answered_first)


def bad(
    case_id: str,
    raw: bytes,
    status: int,
    rfc: str,
    *,
    smuggle: bool = True,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    answered_first: tuple[Echo, ...] = (),
) -> Case:
    """A rejected request; by default followed by a complete /smuggled request."""
    raw += SMUGGLED if smuggle else b""
    return Case(case_id, raw, status, rfc, config or {}, answered_first=answered_first)


def ok(
    case_id: str,
    raw: bytes,
    *echoes: Echo,
    rfc: str,
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> Case:
    """An accepted request (or pipeline); the last request must ask for Connection: close
    (or be HTTP/1.0) so the server ends the exchange."""
    return Case(case_id, raw, Accepted(echoes), rfc, config or {})


def _post(head: bytes, body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\n" + HOST + head + b"\r\n" + body


def _chunked(body: bytes) -> bytes:
    return _post(b"Transfer-Encoding: chunked\r\n", body)


def _get_with(header: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\n" + HOST + header + b"\r\n"


def _line(target_length: int) -> bytes:
    """A request line of exactly `target_length` + 13 bytes ("GET " target " HTTP/1.1")."""
    return b"GET /" + b"a" * (target_length - 1) + b" HTTP/1.1\r\n"


_CLOSE = b"Connection: close\r\n"

# Content-Length (RFC 9110 §8.6, RFC 9112 §6.2-§6.3) ------------------------------------
_CONTENT_LENGTH = [
    # Either framing would let /smuggled through: by CL 5 the body is "0\r\n\r\n", by
    # chunked the body ends at "0\r\n\r\n"; both leave the /smuggled request behind.
    bad(
        "cl-then-te",
        _post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §6.1 (MAY reject, MUST close), §6.3 (3), §11.2",
    ),
    bad(
        "te-then-cl",
        _post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §6.1, §6.3 (3), §11.2",
    ),
    bad(
        "cl-te-chunk-body",
        _post(b"Content-Length: 30\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        400,
        "RFC 9112 §6.1, §11.2",
    ),
    bad(
        "cl-duplicate-same",
        _post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
        400,
        "RFC 9110 §8.6 (MAY reject), SPEC §3",
    ),
    bad(
        "cl-duplicate-different",
        _post(b"Content-Length: 5\r\nContent-Length: 0\r\n", b"hello"),
        400,
        "RFC 9112 §6.3 (4) MUST 400",
    ),
    bad(
        "cl-list-same",
        _post(b"Content-Length: 5, 5\r\n", b"hello"),
        400,
        "RFC 9112 §6.3 (4) (may accept, SPEC §3 rejects)",
    ),
    bad(
        "cl-list-different",
        _post(b"Content-Length: 5, 0\r\n", b"hello"),
        400,
        "RFC 9112 §6.3 (4) MUST 400",
    ),
    bad(
        "cl-non-numeric",
        _post(b"Content-Length: five\r\n", b"hello"),
        400,
        "RFC 9110 §8.6 (1*DIGIT), RFC 9112 §6.3 (4)",
    ),
    bad("cl-negative", _post(b"Content-Length: -5\r\n", b"hello"), 400, "RFC 9110 §8.6 (1*DIGIT)"),
    bad("cl-plus-sign", _post(b"Content-Length: +5\r\n", b"hello"), 400, "RFC 9110 §8.6 (1*DIGIT)"),
    bad("cl-hex", _post(b"Content-Length: 0x5\r\n", b"hello"), 400, "RFC 9110 §8.6 (1*DIGIT)"),
    bad(
        "cl-decimal-point",
        _post(b"Content-Length: 5.0\r\n", b"hello"),
        400,
        "RFC 9110 §8.6 (1*DIGIT)",
    ),
    bad(
        "cl-interior-space",
        _post(b"Content-Length: 1 0\r\n", b"helloworld"),
        400,
        "RFC 9110 §8.6 (1*DIGIT)",
    ),
    bad(
        "cl-vertical-tab",
        _post(b"Content-Length: 5\x0b\r\n", b"hello"),
        400,
        "RFC 9112 §5 (OWS is SP/HTAB only), RFC 9110 §8.6",
    ),
    bad("cl-empty", _post(b"Content-Length: \r\n", b"hello"), 400, "RFC 9110 §8.6 (1*DIGIT)"),
    bad(
        "cl-overflow",
        _post(b"Content-Length: 184467440737095516160\r\n", b"hello"),
        400,
        "RFC 9110 §8.6 (prevent integer overflow)",
    ),
]

# Transfer-Encoding (RFC 9112 §6.1, §6.3, §7) ------------------------------------------
_TRANSFER_ENCODING = [
    bad(
        "te-gzip-alone",
        _post(b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §6.3 (3) chunked not final: MUST 400",
    ),
    bad(
        "te-chunked-identity",
        _post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §6.3 (3) chunked not final",
    ),
    bad(
        "te-xchunked",
        _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §6.3 (3) unknown coding, chunked not final",
    ),
    bad(
        "te-chunked-vertical-tab",
        _post(b"Transfer-Encoding: chunked\x0b\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §5 (VT is not OWS), §6.3 (3)",
    ),
    bad(
        "te-quoted",
        _post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"),
        400,
        "RFC 9112 §7 (coding is a token), §6.3 (3)",
    ),
    bad(
        "te-empty",
        _post(b"Transfer-Encoding: \r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §6.3 (3) chunked not final",
    ),
    bad(
        "te-two-fields-chunked-first",
        _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9110 §5.3 (fields combine), RFC 9112 §6.3 (3)",
    ),
    bad(
        "te-chunked-twice",
        _post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §6.1 (chunked MUST NOT be applied twice)",
    ),
    bad(
        "te-gzip-then-chunked",
        _post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        501,
        "RFC 9112 §6.1 (unimplemented coding SHOULD 501)",
    ),
    bad(
        "te-space-before-colon",
        _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §5.1 (MUST 400)",
    ),
    bad(
        "te-http10",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 §6.1 (TE in HTTP/1.0: framing is faulty)",
    ),
]

# Chunked body (RFC 9112 §7.1) ---------------------------------------------------------
_CHUNKED = [
    bad("chunk-size-non-hex", _chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    bad(
        "chunk-size-overflow",
        _chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n"),
        400,
        "RFC 9112 §7.1 (MUST prevent integer overflow)",
    ),
    bad("chunk-size-negative", _chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    bad("chunk-size-0x-prefix", _chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    bad("chunk-size-empty", _chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    bad(
        "chunk-size-leading-space",
        _chunked(b" 5\r\nhello\r\n0\r\n\r\n"),
        400,
        "RFC 9112 §7.1 (1*HEXDIG)",
    ),
    bad(
        "chunk-size-trailing-space",
        _chunked(b"5 \r\nhello\r\n0\r\n\r\n"),
        400,
        "RFC 9112 §7.1.1 (BWS only before ';')",
    ),
    bad("chunk-data-missing-crlf", _chunked(b"5\r\nhello0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    bad("chunk-data-too-long", _chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1"),
    # CVE-2025-43859 (h11 < 0.16 took any two bytes after chunk data as the CRLF).
    bad(
        "chunk-data-bad-terminator-cve-2025-43859",
        _chunked(b"5\r\nAAAAAXX2\r\n45\r\n0\r\n\r\n"),
        400,
        "RFC 9112 §7.1",
    ),
    bad("chunk-data-bare-lf", _chunked(b"5\r\nhello\n0\r\n\r\n"), 400, "RFC 9112 §7.1, §2.2"),
    bad("chunk-size-bare-lf", _chunked(b"5\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1, §2.2"),
    bad("chunk-ext-bare-lf", _chunked(b"5;ext\nhello\r\n0\r\n\r\n"), 400, "RFC 9112 §7.1.1, §2.2"),
    bad(
        "chunk-ext-bare-cr",
        _chunked(b"5;ext\rx\r\nhello\r\n0\r\n\r\n"),
        400,
        "RFC 9112 §7.1.1, §2.2 (bare CR)",
    ),
    bad("last-chunk-bare-lf", _chunked(b"5\r\nhello\r\n0\n\n"), 400, "RFC 9112 §7.1, §2.2"),
    bad("trailer-bare-lf", _chunked(b"0\r\nX-Trailer: y\n\r\n"), 400, "RFC 9112 §7.1.2, §2.2"),
    bad(
        "trailer-invalid-name",
        _chunked(b"0\r\nBad Name: y\r\n\r\n"),
        400,
        "RFC 9112 §7.1.2, RFC 9110 §5.1",
    ),
]

# Field lines (RFC 9112 §2.2, §5; RFC 9110 §5) -----------------------------------------
_FIELDS = [
    bad("value-bare-cr", _get_with(b"X-Test: a\rb\r\n"), 400, "RFC 9112 §2.2 (bare CR)"),
    bad(
        "bare-lf-everywhere",
        b"GET / HTTP/1.1\nHost: example.com\n\n",
        400,
        "RFC 9112 §2.2 (MAY accept bare LF; rejected)",
    ),
    bad(
        "bare-lf-one-field",
        _get_with(b"X-Test: a\nX-Other: b\r\n"),
        400,
        "RFC 9112 §2.2 (MAY accept bare LF; rejected)",
    ),
    bad(
        "bare-lf-end-of-head",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\n",
        400,
        "RFC 9112 §2.2 (MAY accept bare LF; rejected)",
    ),
    bad("value-nul", _get_with(b"X-Test: a\x00b\r\n"), 400, "RFC 9110 §5.5 (NUL)"),
    bad(
        "value-control-char",
        _get_with(b"X-Test: a\x01b\r\n"),
        400,
        "RFC 9110 §5.5 (CTL MAY be kept; rejected)",
    ),
    bad("name-space-before-colon", _get_with(b"X-Test : a\r\n"), 400, "RFC 9112 §5.1 MUST 400"),
    bad("name-inner-space", _get_with(b"Foo Bar: a\r\n"), 400, "RFC 9110 §5.1 (token)"),
    bad("name-non-token", _get_with(b"Foo@Bar: a\r\n"), 400, "RFC 9110 §5.1 (token)"),
    bad("name-non-ascii", _get_with(b"F\xc3\xb6o: a\r\n"), 400, "RFC 9110 §5.1 (token)"),
    bad("name-empty", _get_with(b": a\r\n"), 400, "RFC 9110 §5.1 (1*tchar)"),
    bad("field-without-colon", _get_with(b"X-Test\r\n"), 400, "RFC 9112 §5"),
    bad(
        "obs-fold-space",
        _get_with(b"X-Test: a\r\n b\r\n"),
        400,
        "RFC 9112 §5.2 (reject or replace; rejected)",
    ),
    bad(
        "obs-fold-tab",
        _get_with(b"X-Test: a\r\n\tb\r\n"),
        400,
        "RFC 9112 §5.2 (reject or replace; rejected)",
    ),
    bad(
        "whitespace-before-first-field",
        b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n",
        400,
        "RFC 9112 §2.2 (reject or ignore the line; rejected)",
    ),
]

# Host (RFC 9112 §3.2) -----------------------------------------------------------------
_HOST = [
    bad("host-missing", b"GET / HTTP/1.1\r\nX-Test: a\r\n\r\n", 400, "RFC 9112 §3.2 MUST 400"),
    bad(
        "host-duplicate",
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        400,
        "RFC 9112 §3.2 MUST 400",
    ),
    bad(
        "host-inner-space",
        b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n",
        400,
        "RFC 9112 §3.2 (invalid field value) MUST 400",
    ),
    bad(
        "host-userinfo",
        b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n",
        400,
        'RFC 9112 §3.2 (uri-host [ ":" port ])',
    ),
    bad(
        "host-with-path",
        b"GET / HTTP/1.1\r\nHost: example.com/evil\r\n\r\n",
        400,
        'RFC 9112 §3.2 (uri-host [ ":" port ])',
    ),
    bad(
        "host-bad-port",
        b"GET / HTTP/1.1\r\nHost: example.com:80x\r\n\r\n",
        400,
        "RFC 9112 §3.2, RFC 3986 §3.2.3 (port = *DIGIT)",
    ),
]

# Request line (RFC 9112 §2.3, §3; RFC 9110 §2.5) ----------------------------------------
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_REQUEST_LINE = [
    bad("line-missing-version", b"GET /\r\n" + HOST + b"\r\n", 400, "RFC 9112 §3"),
    bad(
        "line-lowercase-version",
        b"GET / http/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §2.3 (HTTP-name is case-sensitive)",
    ),
    bad(
        "line-two-digit-minor",
        b"GET / HTTP/1.10\r\n" + HOST + b"\r\n",
        400,
        'RFC 9112 §2.3 (DIGIT "." DIGIT)',
    ),
    bad(
        "line-http2-version",
        b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
        505,
        "RFC 9110 §15.6.6 (major version not supported)",
    ),
    bad("h2-preface-h2-off", _PREFACE, 505, "RFC 9110 §15.6.6; RFC 9113 §3.4 preface"),
    bad(
        "line-double-space",
        b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §3 (single SP; MAY be lenient, strict here)",
    ),
    bad("line-trailing-space", b"GET / HTTP/1.1 \r\n" + HOST + b"\r\n", 400, "RFC 9112 §3"),
    bad("line-tab-separators", b"GET\t/\tHTTP/1.1\r\n" + HOST + b"\r\n", 400, "RFC 9112 §3"),
    bad(
        "line-method-non-token",
        b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9110 §9.1 (method = token)",
    ),
    bad("line-target-space", b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n", 400, "RFC 9112 §3.2"),
    bad(
        "line-target-non-ascii",
        b"GET /\xff HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §3.2, RFC 3986 §3.3",
    ),
    bad(
        "line-target-control",
        b"GET /a\x01b HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §3.2, RFC 3986 §3.3",
    ),
    bad(
        "line-asterisk-not-options",
        b"GET * HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §3.2.4 (asterisk-form only for OPTIONS)",
    ),
    bad(
        "line-unknown-method-token",
        b"PURGE-X /m HTTP/1.1\r\n" + HOST + b"\r\n",
        501,
        "RFC 9110 §9.1 (unrecognised method SHOULD 501), §15.6.2",
    ),
]

# Pipelines and Expect (RFC 9112 §9.3.2, RFC 9110 §10.1.1) --------------------------------
_PIPELINES = [
    # The valid requests before the bad one are answered in order, then the error, then
    # the close; nothing after the bad request is ever served.
    bad(
        "pipelined-valid-then-cl-te",
        b"GET /first HTTP/1.1\r\n" + HOST + b"\r\n"
        b"POST /second HTTP/1.1\r\n"
        + HOST
        + b"Content-Length: 5\r\n\r\nhello"
        + _post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
        "RFC 9112 §9.3.2, §6.1, §11.2",
        answered_first=(Echo("/first"), Echo("/second", "POST", b"hello")),
    ),
    bad(
        "pipelined-valid-then-bad-chunk",
        b"GET /first HTTP/1.1\r\n" + HOST + b"\r\n" + _chunked(b"5\r\nhelloXX0\r\n\r\n"),
        400,
        "RFC 9112 §9.3.2, §7.1",
        answered_first=(Echo("/first"),),
    ),
    # The strict request line holds for a request pipelined behind others in one read.
    bad(
        "pipelined-valid-then-line-double-space",
        b"GET /first HTTP/1.1\r\n" + HOST + b"\r\n"
        b"POST /second HTTP/1.1\r\n"
        + HOST
        + b"Content-Length: 5\r\n\r\nhello"
        + b"GET  / HTTP/1.1\r\n"
        + HOST
        + b"\r\n",
        400,
        "RFC 9112 §9.3.2, §3",
        answered_first=(Echo("/first"), Echo("/second", "POST", b"hello")),
    ),
    # RFC 9110 §10.1.1: a server that will reject the body must not invite it with 100.
    bad(
        "expect-continue-over-body-limit",
        _post(b"Expect: 100-continue\r\nContent-Length: %d\r\n" % (BODY_LIMIT + 1), b""),
        413,
        "RFC 9110 §10.1.1, §15.5.14",
        smuggle=False,
        config=BODY,
    ),
]

# Limits (RFC 9110 §15.5.14-15, RFC 6585 §5) -------------------------------------------
_LIMITS = [
    bad(
        "line-over-limit-by-one",
        _line(LINE_LIMIT - 13 + 1) + HOST + b"\r\n",
        414,
        "RFC 9112 §3 (MUST 414), RFC 9110 §15.5.15",
        config=LIMITS,
    ),
    bad(
        "line-far-over-limit",
        _line(3 * LINE_LIMIT) + HOST + b"\r\n",
        414,
        "RFC 9112 §3 (MUST 414), RFC 9110 §15.5.15",
        config=LIMITS,
    ),
    bad(
        "head-over-limit",
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-Fill-%d: %s\r\n" % (n, b"f" * 1500) for n in range(4))
        + b"\r\n",
        431,
        "RFC 6585 §5",
        config=LIMITS,
    ),
    bad(
        "single-field-over-limit",
        _get_with(b"X-Big: " + b"b" * (HEAD_LIMIT + 100) + b"\r\n"),
        431,
        "RFC 6585 §5",
        config=LIMITS,
    ),
    bad(
        "too-many-fields",
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-N-%d: n\r\n" % n for n in range(COUNT_LIMIT))
        + b"\r\n",
        431,
        "RFC 6585 §5",
        config=LIMITS,
    ),
    # No body is sent: the 413 must come from the declared length alone.
    bad(
        "body-content-length-over-limit",
        _post(b"Content-Length: %d\r\n" % (BODY_LIMIT + 1), b""),
        413,
        "RFC 9110 §15.5.14",
        smuggle=False,
        config=BODY,
    ),
    bad(
        "body-chunked-over-limit",
        _chunked(b"258\r\n" + b"c" * 600 + b"\r\n258\r\n" + b"c" * 600 + b"\r\n0\r\n\r\n"),
        413,
        "RFC 9110 §15.5.14",
        config=BODY,
    ),
]

# Header-read timeout (RFC 9110 §15.5.9) -----------------------------------------------
_TIMEOUTS = [
    Case(
        "slowloris-partial-head",
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Slow: a",
        408,
        "RFC 9110 §15.5.9",
        SLOW,
        within=_TIMEOUT_WINDOW,
        deadline=HEADER_READ + 2 * SLACK,
    ),
    Case(
        "slowloris-dribble",
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Slow: " + b"s" * 100,
        408,
        "RFC 9110 §15.5.9 (whole-head deadline)",
        SLOW,
        dribble=0.05,
        within=_TIMEOUT_WINDOW,
        deadline=HEADER_READ + 2 * SLACK,
    ),
    Case(
        "idle-connection-no-bytes",
        b"",
        SilentClose(),
        "RFC 9112 §9.5",
        SLOW,
        within=_TIMEOUT_WINDOW,
        deadline=HEADER_READ + 2 * SLACK,
    ),
]

# Valid but odd: must be ACCEPTED --------------------------------------------------------
_HELLO = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
_ACCEPTED = [
    ok(
        "te-chunked-capitalised",
        _post(_CLOSE + b"Transfer-Encoding: Chunked\r\n", _HELLO),
        Echo("/", "POST", b"hello world"),
        rfc="RFC 9112 §7 (coding names case-insensitive)",
    ),
    ok(
        "te-chunked-uppercase",
        _post(_CLOSE + b"Transfer-Encoding: CHUNKED\r\n", _HELLO),
        Echo("/", "POST", b"hello world"),
        rfc="RFC 9112 §7 (coding names case-insensitive)",
    ),
    ok(
        "te-chunked-ows-tabs",
        _post(_CLOSE + b"Transfer-Encoding:\tchunked\t\r\n", _HELLO),
        Echo("/", "POST", b"hello world"),
        rfc="RFC 9112 §5 (OWS around field values)",
    ),
    ok(
        "te-chunked-ows-tabs-pipelined",
        _post(b"Transfer-Encoding:\tchunked\t\r\n", b"5\r\nhello\r\n0\r\nX-T: 1\t\r\n\r\n")
        + b"GET /next HTTP/1.1\r\n"
        + HOST
        + _CLOSE
        + b"\r\n",
        Echo("/", "POST", b"hello"),
        Echo("/next"),
        rfc="RFC 9112 §5, §7.1 (the request after a chunked body with OWS)",
    ),
    ok(
        "cl-ows-padded",
        _post(_CLOSE + b"Content-Length:  5 \t\r\n", b"hello"),
        Echo("/", "POST", b"hello"),
        rfc="RFC 9112 §5 (OWS around field values)",
    ),
    ok(
        "chunk-extensions",
        _post(
            _CLOSE + b"Transfer-Encoding: chunked\r\n",
            b'5;name=value;flag\r\nhello\r\n6;q="a b"\r\n world\r\n0;last\r\n\r\n',
        ),
        Echo("/", "POST", b"hello world"),
        rfc="RFC 9112 §7.1.1 (extensions ignored)",
    ),
    ok(
        "chunk-size-leading-zeros-and-upper-hex",
        _post(
            _CLOSE + b"Transfer-Encoding: chunked\r\n",
            b"0005\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
        ),
        Echo("/", "POST", b"hello0123456789"),
        rfc="RFC 9112 §7.1 (1*HEXDIG)",
    ),
    ok(
        "chunked-trailers",
        _post(
            _CLOSE + b"Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n",
        ),
        Echo("/", "POST", b"hello"),
        rfc="RFC 9112 §7.1.2",
    ),
    ok(
        "options-asterisk",
        b"OPTIONS * HTTP/1.1\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("*", "OPTIONS"),
        rfc="RFC 9112 §3.2.4",
    ),
    ok(
        "get-content-length-zero",
        _get_with(_CLOSE + b"Content-Length: 0\r\n"),
        Echo("/"),
        rfc="RFC 9110 §8.6",
    ),
    ok(
        "head-request",
        b"HEAD /head HTTP/1.1\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("/head", "HEAD"),
        rfc="RFC 9110 §9.3.2",
    ),
    ok(
        "pipelined-in-order",
        b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\n"
        b"POST /2 HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello"
        b"POST /3 HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + _HELLO
        + b"GET /4 HTTP/1.1\r\n"
        + HOST
        + _CLOSE
        + b"\r\n",
        Echo("/1"),
        Echo("/2", "POST", b"hello"),
        Echo("/3", "POST", b"hello world"),
        Echo("/4"),
        rfc="RFC 9112 §9.3.2 (pipelining, responses in order)",
    ),
    ok(
        "http10-with-body",
        b"POST /ten HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
        Echo("/ten", "POST", b"hello", "1.0"),
        rfc="RFC 9112 §3.2 (no Host needed in 1.0)",
    ),
    ok(
        "http12-minor-version",
        b"GET /v HTTP/1.2\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("/v"),
        rfc="RFC 9110 §2.5 (higher minor: process as 1.1)",
    ),
    ok(
        "leading-empty-line",
        b"\r\nGET /after-crlf HTTP/1.1\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("/after-crlf"),
        rfc="RFC 9112 §2.2 (SHOULD ignore one leading CRLF)",
    ),
    ok(
        "absolute-form-other-host",
        b"GET http://other.example/abs?q=1 HTTP/1.1\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("/abs"),
        rfc="RFC 9112 §3.2.2 (target authority wins over Host)",
    ),
    ok(
        "webdav-method",
        b"PROPFIND /dav HTTP/1.1\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("/dav", "PROPFIND"),
        rfc="RFC 9110 §9.1, RFC 4918 §9.1 (registered methods reach the app)",
    ),
    ok(
        "host-empty",
        b"GET /e HTTP/1.1\r\nHost:\r\n" + _CLOSE + b"\r\n",
        Echo("/e"),
        rfc="RFC 9112 §3.2 (empty Host when no authority)",
    ),
    ok(
        "value-obs-text",
        _get_with(_CLOSE + b"X-Latin: caf\xe9 \x80\xff\r\n"),
        Echo("/"),
        rfc="RFC 9110 §5.5 (obs-text allowed)",
    ),
    ok(
        "name-all-tchars",
        _get_with(_CLOSE + b"!#$%&'*+-.^_`|~09azAZ: v\r\n"),
        Echo("/"),
        rfc="RFC 9110 §5.6.2 (tchar)",
    ),
    ok(
        "line-at-limit",
        _line(LINE_LIMIT - 13) + HOST + _CLOSE + b"\r\n",
        Echo("/" + "a" * (LINE_LIMIT - 14)),
        rfc="http.max_request_line is inclusive",
        config=LIMITS,
    ),
    ok(
        "fields-at-count-limit",
        b"GET / HTTP/1.1\r\n"
        + HOST
        + _CLOSE
        + b"".join(b"X-N-%d: n\r\n" % n for n in range(COUNT_LIMIT - 2))
        + b"\r\n",
        Echo("/"),
        rfc="http.max_header_count is inclusive",
        config=LIMITS,
    ),
    ok(
        "head-under-limit",
        b"GET / HTTP/1.1\r\n"
        + HOST
        + _CLOSE
        + b"".join(b"X-Fill-%d: %s\r\n" % (n, b"f" * 1000) for n in range(3))
        + b"\r\n",
        Echo("/"),
        rfc="RFC 6585 §5 (3 KiB head under a 4 KiB limit)",
        config=LIMITS,
    ),
    ok(
        "body-content-length-at-limit",
        _post(_CLOSE + b"Content-Length: %d\r\n" % BODY_LIMIT, b"x" * BODY_LIMIT),
        Echo("/", "POST", b"x" * BODY_LIMIT),
        rfc="limits.max_body_size is inclusive",
        config=BODY,
    ),
    ok(
        "body-chunked-at-limit",
        _post(
            _CLOSE + b"Transfer-Encoding: chunked\r\n",
            b"200\r\n" + b"y" * 512 + b"\r\n200\r\n" + b"y" * 512 + b"\r\n0\r\n\r\n",
        ),
        Echo("/", "POST", b"y" * BODY_LIMIT),
        rfc="limits.max_body_size is inclusive",
        config=BODY,
    ),
]

# Request boundaries (issue 10): each reproducer of a smuggling, desync or lost request
# found by differential fuzzing. test_http11_boundaries.py sends each of these split
# into two writes as well.
_SMUGGLE_BODY = SMUGGLED.replace(b"example.com", b"a")
_DOUBLE_SPACED = (
    b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab  cd  ef"
    b"POST /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 4\r\n\r\nx  y"
)
_BOUNDARIES = [
    ok(
        "upgrade-not-taken-body-framed",
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
        b"Content-Length: %d\r\n\r\n"
        % len(_SMUGGLE_BODY)
        + _SMUGGLE_BODY
        + b"GET /last HTTP/1.1\r\n"
        + HOST
        + _CLOSE
        + b"\r\n",
        Echo("/", "POST", _SMUGGLE_BODY),
        Echo("/last"),
        rfc="RFC 9110 §7.8 (an Upgrade not taken: plain HTTP), RFC 9112 §6.3 (body by length)",
    ),
    ok(
        "upgrade-not-taken-chunked-body-framed",
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: foo\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n"
        % len(_SMUGGLE_BODY)
        + _SMUGGLE_BODY
        + b"\r\n0\r\n\r\nGET /last HTTP/1.1\r\n"
        + HOST
        + _CLOSE
        + b"\r\n",
        Echo("/", "POST", _SMUGGLE_BODY),
        Echo("/last"),
        rfc="RFC 9110 §7.8, RFC 9112 §7.1",
    ),
    ok(
        "connection-xupgrade-is-not-upgrade",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: xupgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /next HTTP/1.1\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("/ws"),
        Echo("/next"),
        rfc="RFC 9110 §7.6.1 (Connection is a token list), §7.8",
    ),
    ok(
        "chunked-trailers-never-headers",
        _post(
            _CLOSE + b"Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\nX-Injected: 1\r\nHost: evil\r\n\r\n",
        ),
        Echo(
            "/",
            "POST",
            b"hello",
            headers=(
                (b"host", b"example.com"),
                (b"connection", b"close"),
                (b"transfer-encoding", b"chunked"),
            ),
        ),
        rfc="RFC 9112 §7.1.2 (trailers are not header fields; ASGI has no request trailers)",
    ),
    ok(
        "large-body-then-pipelined-request",
        _post(b"Content-Length: 20000\r\n", b"b" * 20000)
        + b"GET /next HTTP/1.1\r\n"
        + HOST
        + _CLOSE
        + b"\r\n",
        Echo("/", "POST", b"b" * 20000),
        Echo("/next"),
        rfc="RFC 9112 §9.3.2 (a body over 16 KiB and a request in one read)",
    ),
    bad(
        "h2c-upgrade-without-http2-then-bad-line",
        b"GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        b"GET  /bad HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
        "RFC 9110 §7.8 (h2c not offered: plain HTTP), RFC 9112 §3",
        answered_first=(Echo("/h2c"),),
    ),
    bad(
        "pipelined-get-then-line-double-space",
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET  /b HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
        "RFC 9112 §3 (single SP), §9.3.2",
        answered_first=(Echo("/a"),),
    ),
    replace(
        ok(
            "pipelined-bodies-with-double-spaces",
            _DOUBLE_SPACED,
            Echo("/a", "POST", b"ab  cd  ef"),
            Echo("/b", "POST", b"x  y"),
            rfc="RFC 9112 §6.3 (a body is not a request line)",
        ),
        # The first body in two reads, the next request in a third (what once failed).
        splits=tuple(
            (_DOUBLE_SPACED.index(b"cd  ef") + shift, _DOUBLE_SPACED.index(b"POST /b") + 5)
            for shift in (-3, 0, 3)
        ),
    ),
    ok(
        "chunked-with-http10-in-a-field-value",
        _post(_CLOSE + b"X-V: HTTP/1.0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        Echo("/", "POST"),
        rfc="RFC 9112 §6.1 (the version is the request line's, not a field value's)",
    ),
    # No CRLF CRLF ever follows: the refusal must not wait for the head-read timeout.
    bad(
        "bare-lf-before-end-of-head-refused-at-once",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        400,
        "RFC 9112 §2.2 (bare LF rejected), RFC 9110 §15.5.1",
        smuggle=False,
    ),
    bad(
        "bare-cr-before-request-line",
        b"\rGET / HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §2.2 (only CRLF empty lines may precede; a bare CR is invalid)",
    ),
    bad(
        "bare-lf-before-request-line",
        b"\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §2.2 (bare LF rejected everywhere)",
    ),
    bad(
        "unknown-method-in-malformed-line",
        b"FOO /a b HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §3 (an invalid request-line gets 400; 501 is for a valid line)",
    ),
    bad(
        "line-rtsp-version",
        b"GET / RTSP/1.0\r\n" + HOST + b"\r\n",
        400,
        'RFC 9112 §2.3 (HTTP-name is "HTTP")',
    ),
    bad(
        "absolute-form-unterminated-ipv6",
        b"GET http://[::1/first HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §3.2.2, RFC 3986 §3.2.2 (IP-literal is closed by ']')",
    ),
    bad(
        "absolute-form-empty-host",
        b"GET http:///x HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9110 §4.2.1 (empty host MUST be rejected)",
    ),
    bad(
        "absolute-form-userinfo",
        b"GET http://u@h.example/ HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9110 §4.2.4 (userinfo: treat as an error)",
    ),
    bad(
        "target-with-fragment",
        b"GET /a#f HTTP/1.1\r\n" + HOST + b"\r\n",
        400,
        "RFC 9112 §3.2 (origin-form = absolute-path [ ? query ], no fragment)",
    ),
    bad(
        "absolute-form-fragment-after-host",
        b"PUT http://h.example#e/abs?q=1 HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n",
        400,
        "RFC 9112 §3.2.2 (absolute-URI has no fragment)",
    ),
    ok(
        "absolute-form-query-without-path",
        b"GET http://h.example?q=1 HTTP/1.1\r\n" + HOST + _CLOSE + b"\r\n",
        Echo("/"),
        rfc="RFC 9112 §3.2.2, RFC 3986 §3 (path-abempty may be empty)",
    ),
]

CASES: Final[tuple[Case, ...]] = (
    *_CONTENT_LENGTH,
    *_TRANSFER_ENCODING,
    *_CHUNKED,
    *_FIELDS,
    *_HOST,
    *_REQUEST_LINE,
    *_PIPELINES,
    *_LIMITS,
    *_TIMEOUTS,
    *_ACCEPTED,
    *_BOUNDARIES,
)

assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"
