"""HTTP/1.1 over httptools (llhttp): the fast parser backend.

llhttp already refuses bad syntax (bare CR/LF, obs-fold, invalid names and values, bad
chunk sizes, conflicting Content-Length); the shared rules in `limits` add what it lets
through, and this module enforces the head limits llhttp has none of, counting bytes as
its callbacks arrive.
"""

from __future__ import annotations

import re

import httptools

from palfrey.protocols.context import ConnectionContext
from palfrey.protocols.http11_base import HTTP11Connection
from palfrey.protocols.http11_chunked import ChunkedDecoder
from palfrey.protocols.limits import ProtocolError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch

# Length of " HTTP/1.1" plus the separator after the method.
_LINE_OVERHEAD = 10
_OWS = (b" ", b"\t")
_CRLF = (b"\r", b"\n")
_AFTER_PREVIOUS = -2
# RFC 9112 §3: method SP request-target SP HTTP-version, single spaces (llhttp skips
# repeated ones; the corpus pins strictness).
_REQUEST_LINE = re.compile(rb"[^ ]+ [^ ]+ [^ ]+").fullmatch


class HTTPToolsConnection(HTTP11Connection):
    """An HTTP/1.1 connection parsed by httptools."""

    # llhttp reads any buffer: a large read is fed as memoryview slices, not copies (only
    # the rare paths below that search the raw bytes turn a view into bytes).
    feeds_views = True

    def __init__(self, ctx: ConnectionContext) -> None:
        super().__init__(ctx)
        self.parser = _new_parser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False
        self._max_header_count = ctx.limits.max_header_count
        self._unparsed = 0  # bytes fed while a head is incomplete (llhttp buffers them)
        # Request-line check (RFC 9112 §3): where the data being fed starts a message.
        self._data = b""
        self._clean: bool | None = None  # whether `_data` needs no request-line check
        self._start = 0
        self._in_message = False
        self._message_start = -1
        self._body_length = 0
        self._line: bytes | None = None  # a request line split across reads
        # `Transfer-Encoding: chunked<HTAB>` (see _on_te_tab).
        self._te_tab = False
        self._decoder: ChunkedDecoder | None = None
        self._after: bytes | None = None

    def feed(self, data: bytes) -> None:
        if self._line is not None:
            self._finish_line(data)
        self._data = data
        self._clean = None
        self._start = -1 if self._in_message else 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # Upgrade requests are served as plain HTTP here (RFC 9110 §7.8 lets a server
            # ignore Upgrade); what follows the request is parsed as the next request.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            if self.upgrade_request is not None:
                # RFC 6455 §4.2: the rest is WebSocket.
                self.switch_protocol(bytes(data[offset:]))
                return
            if offset < len(data):
                self.feed(data[offset:])
            return
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, ProtocolError):
                raise exc.__context__ from None
            raise
        except httptools.HttpParserInvalidMethodError:
            raise _method_error(bytes(data)) from None
        except httptools.HttpParserError as exc:
            raise _parser_error(exc) from None
        if self._in_head:
            self._unparsed += len(data)
            limits = self.ctx.limits
            if self._unparsed > limits.max_head_size:
                raise ProtocolError(431, "Request header fields too large")
        elif self._after is not None:
            self._resume_after_decoder()

    def head_pending(self) -> bool:
        return self._in_head

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._in_message = True
        self._unparsed = 0
        clean = self._clean
        if clean is None:
            # A read that ends a line and holds no double space anywhere cannot hold a bad
            # request line: llhttp has checked everything else about it, so the common
            # case skips locating the line (one C-level scan per read).
            data = self._data
            clean = self._clean = type(data) is bytes and data[-2:] == b"\r\n" and b"  " not in data
        if clean:
            self._message_start = -1
            return
        start = self._start
        if start == _AFTER_PREVIOUS:
            # A pipelined request in the same read: it begins where the previous one
            # (which began in this read, with no body or a Content-Length body) ended.
            start = self._data.find(b"\r\n\r\n", self._message_start) + 4 + self._body_length
        self._message_start = start
        if start >= 0:
            self._check_line(start)

    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url
        if len(self._url) + _LINE_OVERHEAD > self.ctx.limits.max_request_line:
            raise ProtocolError(414, "Request-URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if value[-1:] in _OWS:
            # llhttp keeps trailing OWS (RFC 9110 §5.5 excludes it from the value).
            if b"\t" in value:
                self._on_te_tab(name)
            value = value.rstrip(b" \t")
        headers = self._headers
        headers.append((name.lower(), value))
        # The count bounds memory while parsing; the size is checked once the head is
        # complete (on_headers_complete), and by `feed` while it is still arriving.
        if len(headers) > self._max_header_count:
            raise ProtocolError(431, "Too many header fields")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        method = parser.get_method()
        limits = self.ctx.limits
        if len(method) + len(self._url) + 10 > limits.max_request_line:
            raise ProtocolError(414, "Request-URI too long")
        headers = self._headers
        # The head's fields take at most the bytes fed for it (plus one per field, for
        # "name:value" without the SP counted below): only a head that may be too large
        # is measured field by field (RFC 6585 §5).
        if self._unparsed + len(self._data) + len(headers) > limits.max_head_size and (
            sum(len(name) + len(value) + 4 for name, value in headers) > limits.max_head_size
        ):
            raise ProtocolError(431, "Request header fields too large")
        framing = self.on_head(method, self._url, parser.get_http_version(), headers)
        self._body_length = framing.content_length or 0
        if framing.chunked:
            self._message_start = -1  # its end is not tracked: no check for a follower
            if self._te_tab:
                limits = self.ctx.limits
                self._decoder = ChunkedDecoder(
                    self._decoded,
                    max_line=limits.max_request_line,
                    max_trailer=limits.max_head_size,
                )
        self._te_tab = False

    def on_body(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            HTTP11Connection.on_body(self, data)
        elif self._after is not None:
            self._after += data
        else:
            rest = decoder.feed(data)
            if rest is not None:
                self._after = rest
                self._in_message = False
                self.on_message_end()

    def on_message_complete(self) -> None:
        self._in_message = False
        self._start = _AFTER_PREVIOUS if self._message_start >= 0 else -1
        self.on_message_end()

    # -- request line -------------------------------------------------------------

    def _check_line(self, start: int) -> None:
        data = self._data
        if type(data) is not bytes:
            data = self._data = bytes(data)  # a memoryview slice (see feeds_views)
        if data[start : start + 1] in _CRLF:
            # RFC 9112 §2.2: empty lines before a request line are ignored (llhttp too).
            start = len(data) - len(data[start:].lstrip(b"\r\n"))
        end = data.find(b"\r\n", start)
        if end < 0:
            self._line = data[start:]
        elif _REQUEST_LINE(data, start, end) is None:
            raise ProtocolError(400, "Invalid request line")

    def _finish_line(self, data: bytes) -> None:
        line = self._line + data if self._line else bytes(data)
        end = line.find(b"\r\n")
        if end >= 0:
            self._line = None
            if _REQUEST_LINE(line, 0, end) is None:
                raise ProtocolError(400, "Invalid request line")
        elif len(line) > self.ctx.limits.max_request_line:
            self._line = None  # on_url answers 414
        else:
            self._line = line

    # -- Transfer-Encoding: chunked<HTAB> -------------------------------------------

    def _on_te_tab(self, name: bytes) -> None:
        # RFC 9110 §5.5: a field value may end in SP or HTAB, but llhttp only recognises
        # "chunked" followed by SP. The shared rules read the stripped value; if they
        # accept it (it is exactly "chunked"), llhttp, made lenient about unknown codings
        # (every other coding is refused by the shared rules before any body is read),
        # passes the raw body through and Palfrey decodes the chunks itself.
        if name.lower() == b"transfer-encoding":
            self._te_tab = True

    def _decoded(self, data: bytes) -> None:
        HTTP11Connection.on_body(self, data)

    def _resume_after_decoder(self) -> None:
        # llhttp reads "until close" after such a head: start a fresh parser with what
        # followed the decoded body.
        rest, self._after, self._decoder = self._after, None, None
        self.parser = _new_parser(self)
        if rest:
            self.feed(rest)


def _new_parser(protocol: HTTPToolsConnection) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    # Versions are checked by the shared rules (1.x answered as 1.1, 2+ gets 505);
    # transfer codings too (see HTTPToolsConnection._on_te_tab).
    parser.set_dangerous_leniencies(lenient_version=True, lenient_transfer_encoding=True)
    return parser


def _parser_error(exc: Exception) -> ProtocolError:
    if "PRI" in str(exc):
        # The HTTP/2 preface "PRI * HTTP/2.0" with HTTP/2 off (RFC 9113 §3.4).
        return ProtocolError(505, "HTTP Version Not Supported")
    return ProtocolError(400, "Invalid HTTP request received.")


def _method_error(data: bytes) -> ProtocolError:
    # llhttp knows a fixed list of methods. A well-formed extension method is a request
    # this backend cannot serve (RFC 9110 §9.1: 501); anything else is malformed.
    method = data.lstrip(b"\r\n").partition(b" ")[0]
    if _TOKEN(method) is not None:
        return ProtocolError(501, "Method Not Implemented")
    return ProtocolError(400, "Invalid HTTP method")
