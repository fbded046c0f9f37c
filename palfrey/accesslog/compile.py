"""Access-log formats compiled once into one Python function per kind of line.

A format is a `%`-style string of named fields, as gunicorn's and hypercorn's
`access_log_format` (`%(h)s %(r)s %(s)s`, `%({User-Agent}i)s`, `%(D)d`), so their format
strings paste in. It is parsed and checked once (an unknown field is an error naming the
known ones) and turned into the source of a function that computes only the fields the
format uses and joins them. That is why it is generated code rather than a `%` against a
lazy mapping: an access line is written per request, and the mapping's Python-level
lookups cost several times what the line itself does (see docs/explanation/observability.md).

Three kinds of line: an HTTP request, a WebSocket handshake, and a WebSocket close (whose
duration is the session's and whose `ws_*` fields are set). A JSON format writes one
object per line: the time, level, logger, message and event, then the format's fields (or
a default set), typed: numbers as numbers, missing values as null.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from palfrey.accesslog import helpers
from palfrey.accesslog.fields import (
    FIELDS,
    PREAMBLES,
    Field,
    FormatError,
    Lit,
    needs,
    resolve,
)

__all__ = ["DEFAULT_JSON_FIELDS", "Line", "Renderer", "compile_format", "parse"]

Line = Callable[[Any, float], str]
"""(exchange, monotonic time at its end) -> one access line, without the newline."""

_TOKEN = re.compile(
    r"%(?:(?P<percent>%)|\((?P<name>[^()]*)\)(?P<spec>[#0\- +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]))"
)

DEFAULT_JSON_FIELDS = (
    "client_host",
    "client_port",
    "method",
    "scheme",
    "path",
    "query",
    "http_version",
    "status",
    "request_bytes",
    "body_bytes",
    "duration_ms",
    "request_id",
    "pid",
)
"""What a JSON access line holds when no format is given (after time, level, logger,
message and event)."""

_WEBSOCKET_JSON = (
    "ws_messages_in",
    "ws_messages_out",
    "ws_bytes_in",
    "ws_bytes_out",
    "ws_close_code",
)

_EVENTS = ("request", "handshake", "close")

# What the JSON line's "message" reads ("GET /path?query HTTP/1.1 200").
_MESSAGE = Field("", (), ("method", "path", "qmark", "version", "status"), "")


def parse(fmt: str) -> list[str | tuple[str, str]]:
    """The literal text and `(name, conversion)` fields of a format. Raises FormatError."""
    tokens: list[str | tuple[str, str]] = []
    position = 0
    for match in _TOKEN.finditer(fmt):
        literal = fmt[position : match.start()]
        if "%" in literal:
            raise FormatError(_stray(fmt, position + literal.index("%")))
        tokens.append(literal)
        if match.group("percent"):
            tokens.append("%")
        else:
            tokens.append((match.group("name"), match.group("spec")))
        position = match.end()
    rest = fmt[position:]
    if "%" in rest:
        raise FormatError(_stray(fmt, position + rest.index("%")))
    tokens.append(rest)
    return [token for token in tokens if token != ""]


def _stray(fmt: str, index: int) -> str:
    return (
        f"access-log format {fmt!r}: the '%' at position {index} starts no field; write "
        "fields as %(name)s and a literal percent sign as %%"
    )


def fields_of(fmt: str, atoms: str = "gunicorn") -> list[tuple[str, Field]]:
    """(name, field) for every field of `fmt`, in order. Raises FormatError."""
    return [
        (token[0], resolve(token[0], atoms)) for token in parse(fmt) if isinstance(token, tuple)
    ]


@dataclass(frozen=True)
class Renderer:
    """The compiled lines of one format, and what its fields read."""

    request: Line
    handshake: Line
    close: Line
    #: The format shows the connection's peer (before proxy headers were applied).
    uses_peer: bool


def compile_format(
    fmt: str | None,
    *,
    atoms: str = "gunicorn",
    json: bool = False,
    colours: bool = False,
    logger: str = "palfrey.access",
) -> Renderer:
    """Compile `fmt` (None: uvicorn's line, or the default JSON fields). Raises FormatError."""
    if json:
        return _compile_json(fmt, atoms, logger)
    if fmt is None:
        return _compile_uvicorn(colours)
    tokens = parse(fmt)
    fields = [(token, resolve(token[0], atoms)) for token in tokens if isinstance(token, tuple)]
    lines = []
    for event in _EVENTS:
        parts: list[str | Lit] = []
        for token in tokens:
            if isinstance(token, str):
                parts.append(Lit(token))
            else:
                field = resolve(token[0], atoms)
                spec = token[1]
                parts.append(field.text if spec == "s" else f"_conv({'%' + spec!r}, {field.text})")
        lines.append(_build(event, [f for _, f in fields], parts))
    return Renderer(lines[0], lines[1], lines[2], uses_peer=_uses_peer(f for _, f in fields))


# -- uvicorn's line -------------------------------------------------------------------------

_FG = {1: 97, 2: 32, 3: 33, 4: 31, 5: 91}


def _compile_uvicorn(colours: bool) -> Renderer:
    """`INFO:     127.0.0.1:5000 - "GET / HTTP/1.1" 200 OK`, byte for byte uvicorn's
    default access line (palfrey.logging.AccessFormatter with uvicorn's format)."""
    prefix = "\033[32mINFO\033[0m:     " if colours else "INFO:     "
    line = FIELDS["request_line"].text
    status = "_status_colour(status)" if colours else FIELDS["status_code"].text
    parts: list[str | Lit] = [
        Lit(prefix),
        "(f'{client[0]}:{client[1]}' if client else '')",
        Lit(' - "\033[1m' if colours else ' - "'),
        line,
        Lit('\033[0m" ' if colours else '" '),
        status,
    ]
    needed = [FIELDS["client_addr"], FIELDS["request_line"], FIELDS["status"]]
    closing = [
        *parts,
        "f' closed {ex.close_code} after {duration:.3f} s (in: {ex.messages_in} messages, "
        "{ex.bytes_in} bytes; out: {ex.messages_out} messages, {ex.bytes_out} bytes)'",
    ]
    with_duration = [*needed, FIELDS["duration"]]
    return Renderer(
        _build("request", needed, parts),
        _build("handshake", needed, parts),
        _build("close", with_duration, closing),
        uses_peer=False,
    )


def _status_colour(status: int) -> str:
    colour = _FG.get(status // 100)
    text = helpers.status_text(status)
    return f"\033[{colour}m{text}\033[0m" if colour else text


# -- JSON -----------------------------------------------------------------------------------


def _compile_json(fmt: str | None, atoms: str, logger: str) -> Renderer:
    if fmt is None:
        chosen = [(name, FIELDS[name]) for name in DEFAULT_JSON_FIELDS]
    else:
        chosen = fields_of(fmt, atoms)
    plain: dict[str, Field] = {}
    groups: dict[str, dict[str, Field]] = {"request_headers": {}, "response_headers": {}, "env": {}}
    for _, field in chosen:
        if field.header_in is not None and not field.key:
            groups["request_headers"].setdefault(field.header_in.decode("latin-1"), field)
        elif field.header_out is not None and not field.key:
            groups["response_headers"].setdefault(field.header_out.decode("latin-1"), field)
        elif field.key.startswith("env."):
            groups["env"].setdefault(field.key[4:], field)
        elif field.key not in ("-", "time", "event") and not field.key.startswith("ws_"):
            plain.setdefault(field.key, FIELDS.get(field.key, field))
    head: list[str | Lit] = [
        Lit('{"time":'),
        *FIELDS["time"].json,
        Lit(f',"level":"info","logger":{helpers.json_str(logger)},"message":'),
        "_enc(f'{method} {path}{qmark} HTTP/{version} {status}')",
        Lit(',"event":"'),
        "event",
        Lit('"'),
    ]
    used = [FIELDS["time"], _MESSAGE]
    body: list[str | Lit] = []
    for key, field in plain.items():
        body += [Lit(f',"{key}":'), *field.json]
        used.append(field)
    for title, group in groups.items():
        if not group:
            continue
        body.append(Lit(f',"{title}":{{'))
        for index, (name, field) in enumerate(group.items()):
            body += [Lit(f"{',' if index else ''}{helpers.json_str(name)}:"), *field.json]
            used.append(field)
        body.append(Lit("}"))
    lines = []
    for event in _EVENTS:
        extra: list[str | Lit] = []
        fields_used = list(used)
        if event == "close":
            if "duration_ms" not in plain:
                extra += [Lit(',"duration_ms":'), *FIELDS["duration_ms"].json]
                fields_used.append(FIELDS["duration_ms"])
            for name in _WEBSOCKET_JSON:
                extra += [Lit(f',"{name}":'), *resolve(name).json]
        lines.append(_build(event, fields_used, [*head, *body, *extra, Lit("}")]))
    return Renderer(lines[0], lines[1], lines[2], uses_peer=_uses_peer(used))


# -- code generation ------------------------------------------------------------------------


def _uses_peer(fields: Iterable[Field]) -> bool:
    return any("peer" in field.needs for field in fields)


def _build(event: str, fields: list[Field], parts: list[str | Lit]) -> Line:
    """One line function: the preambles the fields need, then one join of `parts`
    (adjacent literal text merged into one constant)."""
    wanted_in = frozenset(f.header_in for f in fields if f.header_in is not None)
    wanted_out = frozenset(f.header_out for f in fields if f.header_out is not None)
    names = tuple(name for field in fields for name in field.needs)
    source = ["def line(ex, now):"]
    source += [f"    {PREAMBLES[name]}" for name in needs(names)]
    merged: list[str] = []
    literal: list[str] = []
    for part in parts:
        if isinstance(part, Lit):
            literal.append(part.text)
            continue
        if literal:
            merged.append(repr("".join(literal)))
            literal = []
        merged.append(part)
    if literal:
        merged.append(repr("".join(literal)))
    if len(merged) == 1:
        source.append(f"    return {merged[0]}")
    else:
        source.append(f"    return ''.join(({', '.join(merged)},))")
    namespace = {
        **_NAMESPACE,
        "event": event,
        "ws": event == "close",
        "_WANT_IN": wanted_in,
        "_WANT_OUT": wanted_out,
    }
    exec(compile("\n".join(source), f"<access-log format: {event}>", "exec"), namespace)
    line: Line = namespace["line"]
    return line


def _response_headers(ex: Any, wanted: frozenset[bytes]) -> dict[bytes, str]:
    start = getattr(ex, "response_start", None)
    if not start:
        return {}
    found = {}
    for name, value in start.get("headers", ()):
        lower = bytes(name).lower()
        if lower in wanted:
            found[lower] = bytes(value).decode("latin-1")
    return found


def _total(ex: Any) -> int | None:
    head = getattr(ex, "head_bytes", None)
    return None if head is None else int(head) + int(ex.bytes_sent)


def _int_text(value: str | None) -> str:
    return value if value is not None and value.isdigit() else "null"


def _env(name: str) -> str | None:
    environ = os.environ
    return environ.get(name) or environ.get(name.upper()) or environ.get(name.lower())


def _conv(spec: str, text: str) -> str:
    """A field under a conversion other than %s (`%(D)d`, `%(s)5s`): numbers converted
    as numbers; a missing value ("-") keeps the width as a string."""
    kind = spec[-1]
    try:
        if kind in "diouxXc":
            return spec % int(float(text))
        if kind in "eEfFgG":
            return spec % float(text)
    except ValueError:
        return (spec[:-1] + "s") % text
    return spec % text


_NAMESPACE: dict[str, Any] = {
    "__builtins__": {"str": str, "int": int, "float": float},
    "_safe": helpers.safe,
    "_safe_unquoted": helpers.safe_unquoted,
    "_quoted": helpers.quoted_path,
    "_QUOTED": helpers.QUOTED,
    "_status_text": helpers.status_text,
    "_STATUS_TEXT": helpers.STATUS_TEXT,
    "_status_colour": _status_colour,
    "_reason": helpers.reason,
    "_response_headers": _response_headers,
    "_total": _total,
    "_user": helpers.user,
    "_tls_version": helpers.tls_version,
    "_tls_cipher": helpers.tls_cipher,
    "_iso": helpers.iso_time,
    "_clf": helpers.clf_time,
    "_wall": time.time,
    "_PID": helpers.PID_TEXT,
    "_ISO": helpers.ISO_NOW,
    "_env": _env,
    "_conv": _conv,
    "_js": helpers.json_str,
    "_enc": helpers.encode_json_string,
    "_int_text": _int_text,
}
