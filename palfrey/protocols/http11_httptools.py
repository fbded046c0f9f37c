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
from palfrey.protocols.limits import ProtocolError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch

# Length of " HTTP/1.1" plus the separator after the method.
_LINE_OVERHEAD = 10


class HTTPToolsConnection(HTTP11Connection):
    """An HTTP/1.1 connection parsed by httptools."""

    def __init__(self, ctx: ConnectionContext) -> None:
        super().__init__(ctx)
        self.parser = httptools.HttpRequestParser(self)
        # Versions are checked by the shared rules (1.x answered as 1.1, 2+ gets 505).
        self.parser.set_dangerous_leniencies(lenient_version=True)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False
        self._head_size = 0
        self._unparsed = 0  # bytes fed while a head is incomplete (llhttp buffers them)

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # Upgrade requests are served as plain HTTP here (RFC 9110 §7.8 lets a server
            # ignore Upgrade); what follows the request is parsed as the next request.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            if offset < len(data):
                self.feed(data[offset:])
            return
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, ProtocolError):
                raise exc.__context__ from None
            raise
        except httptools.HttpParserInvalidMethodError:
            raise _method_error(data) from None
        except httptools.HttpParserError as exc:
            raise _parser_error(exc) from None
        if self._in_head:
            self._unparsed += len(data)
            limits = self.ctx.limits
            if self._unparsed > limits.max_head_size:
                raise ProtocolError(431, "Request header fields too large")

    def head_pending(self) -> bool:
        return self._in_head

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._head_size = 0
        self._unparsed = 0

    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url
        if len(self._url) + _LINE_OVERHEAD > self.ctx.limits.max_request_line:
            raise ProtocolError(414, "Request-URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name.lower(), value))
        self._head_size += len(name) + len(value) + 4
        limits = self.ctx.limits
        if len(headers) > limits.max_header_count:
            raise ProtocolError(431, "Too many header fields")
        if self._head_size > limits.max_head_size:
            raise ProtocolError(431, "Request header fields too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        method = parser.get_method()
        if len(method) + len(self._url) + 10 > self.ctx.limits.max_request_line:
            raise ProtocolError(414, "Request-URI too long")
        self.on_head(method, self._url, parser.get_http_version(), self._headers)

    def on_message_complete(self) -> None:
        self.on_message_end()


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
