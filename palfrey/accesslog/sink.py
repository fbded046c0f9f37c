"""Where a server's access lines go: written directly, or through the logging module.

`access_sink()` looks at the "palfrey.access" logger as configured when serving starts.
When it is exactly what Palfrey configured (one `AccessHandler` whose formatter Palfrey
can reproduce, no filters, not propagating), lines are rendered by the compiled format
and queued on the handler, which writes them once per event-loop turn: no LogRecord, no
handler lock and no system call per request. Otherwise (a log config of your own, a
filter added by the app, pytest's caplog) every line is a LogRecord carrying uvicorn's
five args and the typed fields, so handlers, filters and formatters see what they
always did. Both write the same bytes for the same configuration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from palfrey.accesslog.compile import Renderer
from palfrey.accesslog.helpers import quoted_path

__all__ = ["AccessSink", "access_sink"]

_monotonic = time.monotonic


class AccessSink:
    """Writes one line per completed request (`request`) and per WebSocket handshake and
    close (`websocket`)."""

    #: (exchange, time.monotonic() at its end, when the caller has read it).
    request: Callable[..., None]
    #: The format shows the peer before proxy headers (the server records it then).
    uses_peer: bool = False

    def websocket(self, exchange: Any, kind: str) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write what is queued (at shutdown)."""


class _Direct(AccessSink):
    def __init__(self, handler: Any, renderer: Renderer, loop: Any) -> None:
        self.handler = handler
        self.renderer = renderer
        self.uses_peer = renderer.uses_peer
        handler.bind_loop(loop)
        pending = handler.pending
        append = pending.append
        render = renderer.request
        flush = handler.flush
        if loop is None:  # no event loop: write each line at once

            def request(exchange: Any, now: float | None = None) -> None:
                append(render(exchange, _monotonic() if now is None else now))
                flush()

        else:
            call_soon = loop.call_soon

            def request(exchange: Any, now: float | None = None) -> None:
                append(render(exchange, _monotonic() if now is None else now))
                if len(pending) == 1:  # the first line of this loop turn
                    call_soon(flush)

        self.request = request

    def websocket(self, exchange: Any, kind: str) -> None:
        line = getattr(self.renderer, kind)(exchange, _monotonic())
        self.handler.write_line(line)

    def flush(self) -> None:
        self.handler.flush()


_MESSAGE = '%s - "%s %s HTTP/%s" %d'


class _Records(AccessSink):
    """Every line a LogRecord: uvicorn's five args, the typed fields as attributes, and
    the exchange for Palfrey's own formatters (`palfrey_access`)."""

    def __init__(self, logger: logging.Logger, uses_peer: bool) -> None:
        self.logger = logger
        self.uses_peer = uses_peer
        self.request = self._request

    def _request(self, exchange: Any, now: float | None = None) -> None:
        self._log(exchange, "request", _MESSAGE)

    def websocket(self, exchange: Any, kind: str) -> None:
        message = _MESSAGE
        if kind == "close":
            # uvicorn's formatter reads exactly five args: the rest goes in the message.
            suffix = (
                f" closed {exchange.close_code} after {_monotonic() - exchange.start_time:.3f} s"
                f" (in: {exchange.messages_in} messages, {exchange.bytes_in} bytes;"
                f" out: {exchange.messages_out} messages, {exchange.bytes_out} bytes)"
            )
            message += suffix.replace("%", "%%")
        self._log(exchange, kind, message)

    def _log(self, exchange: Any, kind: str, message: str) -> None:
        now = _monotonic()
        scope = exchange.scope
        client = scope.get("client")
        method = scope.get("method", "GET")
        path = quoted_path(scope["path"])
        query = scope["query_string"].decode("latin-1")
        if query:
            path = f"{path}?{query}"
        version = scope["http_version"]
        duration = now - exchange.start_time
        state = scope.get("state") or {}
        self.logger.info(
            message,
            f"{client[0]}:{client[1]}" if client else "",
            method,
            path,
            version,
            exchange.status,
            extra={
                "event": kind,
                "client_host": client[0] if client else None,
                "client_port": client[1] if client else None,
                "method": method,
                "path": scope["path"],
                "query": query,
                "http_version": version,
                "status": exchange.status,
                "request_bytes": exchange.body_received,
                "body_bytes": exchange.bytes_sent,
                "duration": duration,
                "duration_ms": round(duration * 1000.0, 3),
                "request_id": state.get("request_id"),
                "palfrey_access": (exchange, now, kind),
            },
        )


def access_sink(loop: Any, name: str = "palfrey.access") -> AccessSink | None:
    """The sink for the access logger as configured now; None when it writes nothing (off,
    above INFO, or no handler anywhere). Lines are written once per turn of `loop` (None:
    each at once)."""
    logger = logging.getLogger(name)
    if logger.disabled or not logger.isEnabledFor(logging.INFO) or not logger.hasHandlers():
        return None
    direct = _direct(logger)
    if direct is not None:
        handler, renderer = direct
        return _Direct(handler, renderer, loop)
    return _Records(logger, uses_peer=_formatters_use_peer(logger))


def _direct(logger: logging.Logger) -> tuple[Any, Renderer] | None:
    from palfrey.accesslog.handler import AccessHandler

    handlers = logger.handlers
    if logger.filters or logger.propagate or len(handlers) != 1:
        return None
    handler = handlers[0]
    if type(handler) is not AccessHandler or handler.filters or handler.level > logging.INFO:
        return None
    make = getattr(handler.formatter, "direct_renderer", None)
    renderer = make() if make is not None else None
    return None if renderer is None else (handler, renderer)


def _formatters_use_peer(logger: logging.Logger) -> bool:
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            make = getattr(handler.formatter, "direct_renderer", None)
            renderer = make() if make is not None else None
            if renderer is not None and renderer.uses_peer:
                return True
        current = current.parent if current.propagate else None
    return False
