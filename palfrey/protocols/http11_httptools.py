"""HTTP/1.1 over httptools (llhttp): the fast parser backend.

llhttp parses each complete request head that the shared framing (`http11_base`) hands
it, and nothing else: bodies are framed by Palfrey, so llhttp's own body handling never
decides where a request ends. (It would: llhttp skips the body of any request whose
`Connection` lists `upgrade`, and passes chunked trailers to the header callback.)

llhttp refuses bad syntax itself (bare CR/LF, obs-fold, invalid names and values,
conflicting Content-Length). What it lets through is checked here: it skips repeated
spaces in the request line and accepts `RTSP/` and `ICE/` versions, so the line is
compared with the method, target and version llhttp read (one comparison on the hot
path). Whenever llhttp or that comparison refuses a head, `limits.refusal` picks the
status from the raw bytes, the same way for both backends.
"""

from __future__ import annotations

import httptools

from palfrey.protocols.context import ConnectionContext
from palfrey.protocols.http11_base import HTTP11Connection, Request
from palfrey.protocols.limits import refusal

_OWS = (b" ", b"\t")


class HTTPToolsConnection(HTTP11Connection):
    """An HTTP/1.1 connection whose request heads are parsed by httptools."""

    def __init__(self, ctx: ConnectionContext) -> None:
        super().__init__(ctx)
        self.parser = _new_parser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._ready = True  # llhttp is between messages (the last head had no body)

    def parse_head(self, head: bytes, eol: int) -> Request:
        if not self._ready:
            # llhttp waits for the body of the previous head, which Palfrey framed.
            self.parser = _new_parser(self)
        parser = self.parser
        self._ready = False
        headers = self._headers = []
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            # llhttp stopped after the head of an upgrade request, its body unread (it
            # never got one): Palfrey frames the body; a fresh parser reads what follows.
            self._ready = False
        except httptools.HttpParserError:
            self._ready = False
            raise refusal(head, self.ctx.limits) from None
        method = parser.get_method()
        url = self._url
        # RFC 9112 §3: method SP target SP "HTTP/" DIGIT "." DIGIT, single spaces. llhttp
        # has checked the characters of each part; only the spacing and the protocol
        # name remain (a line of exactly that length holds no extra space).
        if eol != len(method) + len(url) + 10 or head[eol - 8 : eol - 4] != b"HTTP":
            raise refusal(head, self.ctx.limits)
        if not self._ready and len(headers) != head.count(b"\r\n") - 2:
            # A head with a body (llhttp now waits for it) must still have been read to
            # its end: every field line delivered. (A head without one is known complete:
            # llhttp called on_message_complete.)
            raise refusal(head, self.ctx.limits)
        return method, url, parser.get_http_version(), headers

    # -- httptools callbacks (each costs a C-to-Python call: only the needed ones) --

    def on_url(self, url: bytes) -> None:
        self._url = url  # the whole head is fed at once: the target is one span

    def on_header(self, name: bytes, value: bytes) -> None:
        if value[-1:] in _OWS:
            value = value.rstrip(b" \t")  # llhttp keeps trailing OWS (RFC 9110 §5.5)
        self._headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        self._ready = True


def _new_parser(protocol: HTTPToolsConnection) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    # Versions are checked by the shared rules (1.x answered as 1.1, 2+ gets 505), and
    # so are transfer codings: llhttp must not refuse them first with another status.
    parser.set_dangerous_leniencies(lenient_version=True, lenient_transfer_encoding=True)
    return parser
