"""HTTP/3 header sections as Palfrey builds them (RFC 9114 §4.2): responses from the app's
fields and the server's defaults, WebSocket subprotocols, and the plain answers the
server gives for the app. Requests are checked with HTTP/2's rules
(palfrey.protocols.http2_fields), which are the same in HTTP/3 (RFC 9114 §4.2-4.3).
Sans-IO; no aioquic."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from palfrey.protocols.http2_fields import plain_fields

if TYPE_CHECKING:
    from palfrey.asgi.types import Receive, Scope, Send

__all__ = ["plain_response", "response_fields", "subprotocols"]


def plain_response(status: int, text: bytes) -> Callable[[Scope, Receive, Send], Any]:
    """An ASGI app answering every request with `status` and a plain-text `text`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text})

    return app


_STATUS: dict[int, bytes] = {}
_DEFAULT_FIELDS: dict[int, tuple[bytes, list[tuple[bytes, bytes]]]] = {}


def response_fields(defaults: Any, status: int, headers: Any) -> list[tuple[bytes, bytes]]:
    """A response header section: `:status`, the app's fields lower-cased and checked
    without connection-specific ones (RFC 9114 §4.2), then the server's defaults
    (`DefaultHeaders`) the app did not set."""
    if not 200 <= status <= 999:
        raise RuntimeError(f"invalid final response status {status!r}")  # as on HTTP/1.1
    code = _STATUS.get(status)
    if code is None:
        code = _STATUS[status] = str(status).encode()
    fields = [(b":status", code), *plain_fields(headers)]
    names = defaults.names
    seen = {name for name, _ in fields if name in names}
    return fields + _default_fields(defaults, seen)


def _default_fields(defaults: Any, seen: set[bytes]) -> list[tuple[bytes, bytes]]:
    """The default fields (Server, Date, configured ones, Alt-Svc on TCP), parsed from the
    HTTP/1.1 block, which changes at most once a second."""
    block = defaults.block()
    cached = _DEFAULT_FIELDS.get(id(defaults))
    if cached is None or cached[0] is not block:
        pairs = []
        for line in block.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                pairs.append((name, value))
        cached = _DEFAULT_FIELDS[id(defaults)] = (block, pairs)
    if not seen:
        return cached[1]
    return [(n, v) for n, v in cached[1] if n not in seen]


def subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    found: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            found.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    return found
