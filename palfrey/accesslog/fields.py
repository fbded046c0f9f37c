"""Every field an access line can show: Palfrey's named fields, gunicorn's and
hypercorn's one-letter atoms, and request headers, response headers and environment
variables by name.

A field is Python source over the locals a compiled line has (see `PREAMBLES`): its text
for a text line, its JSON value for a JSON line, and the locals it needs.
palfrey.accesslog.compile turns a format into one function from them.

The names follow uvicorn where uvicorn has one (`client_addr`, `request_line`,
`status_code` in its formatter) and otherwise say what they hold. A missing value is "-"
in a text line, as in gunicorn's, and null in a JSON line. Values that come from the
client (the path, the query, headers) are escaped in text lines: control characters as
\\xNN and, in gunicorn's dialect, double quotes as \\" (CWE-117: a request must not be
able to forge log lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ATOMS",
    "FIELDS",
    "PREAMBLES",
    "WEBSOCKET_FIELDS",
    "Field",
    "FormatError",
    "Lit",
    "needs",
    "resolve",
]


class FormatError(ValueError):
    """An access-log format names a field that does not exist, or is not a format."""


@dataclass(frozen=True)
class Lit:
    """Literal text inside a field's JSON parts (merged with its neighbours when the line
    is compiled: a JSON string's quotes cost nothing)."""

    text: str


Part = str | Lit
"""A Python expression producing a str, or literal text."""


@dataclass(frozen=True)
class Field:
    """One field: its text, its JSON value, the locals both use, and its JSON key."""

    text: str
    json: tuple[Part, ...]
    needs: tuple[str, ...]
    key: str
    doc: str = ""
    #: A request header (`hin`) or response header (`hout`) it reads, lower-case.
    header_in: bytes | None = None
    header_out: bytes | None = None


# Locals a compiled line computes once, in this order, when a field needs them. Request
# header names are lower-case bytes in every Palfrey scope; the app's response headers
# may be spelled any way.
PREAMBLES: dict[str, str] = {
    "scope": "scope = ex.scope",
    "client": "client = scope['client']",
    "peer": "peer = scope['extensions'].get('palfrey.peer', client)",
    "status": "status = ex.status",
    "duration": "duration = now - ex.start_time",
    "method": "method = scope.get('method', 'GET')",
    "version": "version = scope['http_version']",
    "path": "path = scope['path']",
    "query": "query = _qs.decode('latin-1') if (_qs := scope['query_string']) else ''",
    "qmark": "qmark = '?' + query if query else ''",
    "raw": "raw = scope['raw_path'].decode('latin-1')",
    "target": (
        "target = (_QUOTED.get(path) or _quoted(path)) + ('?' + _safe(query) if query else '')"
    ),
    "hin": (
        "hin = {}\n"
        "    for _n, _v in scope['headers']:\n"
        "        if _n in _WANT_IN:\n"
        "            hin[_n] = _v.decode('latin-1')"
    ),
    "hout": "hout = _response_headers(ex, _WANT_OUT)",
    "tls": "tls = scope['extensions'].get('tls')",
    "rid": "rid = scope['state'].get('request_id')",
    "wall": "wall = _wall()",
    # ISO time, from the per-millisecond cache without a call when it is current.
    "iso": "iso = _ISO[1] if int(wall * 1000) == _ISO[0] else _iso(wall)",
}
_DEPENDS: dict[str, tuple[str, ...]] = {
    "client": ("scope",),
    "peer": ("scope", "client"),
    "method": ("scope",),
    "version": ("scope",),
    "path": ("scope",),
    "query": ("scope",),
    "qmark": ("scope", "query"),
    "raw": ("scope",),
    "target": ("scope", "path", "query"),
    "hin": ("scope",),
    "tls": ("scope",),
    "rid": ("scope",),
    "iso": ("wall",),
}


def _token(expr: str, needs: tuple[str, ...], key: str, doc: str) -> Field:
    """A string that never needs escaping (a method, a scheme, a version)."""
    return Field(expr, (Lit('"'), expr, Lit('"')), needs, key, doc)


def _text(expr: str, needs: tuple[str, ...], key: str, doc: str, *, quote: bool = True) -> Field:
    """A string from the client, possibly missing: escaped in text, JSON-encoded."""
    safe = "_safe" if quote else "_safe_unquoted"
    return Field(f"{safe}({expr})", (f"_js({expr})",), needs, key, doc)


def _integer(
    expr: str, needs: tuple[str, ...], key: str, doc: str, *, nullable: bool = False
) -> Field:
    if nullable:
        value = f"(_v := {expr})"
        return Field(
            f"('-' if {value} is None else str(_v))",
            (f"('null' if {value} is None else str(_v))",),
            needs,
            key,
            doc,
        )
    return Field(f"str({expr})", (f"str({expr})",), needs, key, doc)


def _number(expr: str, needs: tuple[str, ...], key: str, doc: str) -> Field:
    return Field(expr, (expr,), needs, key, doc)


_ADDRESS = "(f'{{{0}[0]}}:{{{0}[1]}}' if {0} else None)"
_HOST = "({0}[0] if {0} else None)"
_PORT = "({0}[1] if {0} else None)"


def _address(name: str, key: str, doc: str) -> Field:
    value = _ADDRESS.format(name)
    return Field(
        f"({value} or '-')",
        (f"('\"' + _v + '\"' if (_v := {value}) else 'null')",),
        (name,),
        key,
        doc,
    )


def _host(name: str, key: str, doc: str) -> Field:
    return Field(
        f"({name}[0] if {name} else '-')",
        (f"('\"' + {name}[0] + '\"' if {name} else 'null')",),
        (name,),
        key,
        doc,
    )


_REQUEST_LINE = "f'{method} {target} HTTP/{version}'"
_STATUS_TEXT = "(_STATUS_TEXT.get(status) or _status_text(status))"

FIELDS: dict[str, Field] = {
    "time": Field(
        "iso",
        (Lit('"'), "iso", Lit('"')),
        ("wall", "iso"),
        "time",
        "end of the response, ISO 8601 with milliseconds",
    ),
    "time_local": Field(
        "_clf(wall)",
        (Lit('"'), "_clf(wall)", Lit('"')),
        ("wall",),
        "time_local",
        "end of the response, [10/Oct/2000:13:55:36 +0000]",
    ),
    "client_addr": _address("client", "client_addr", "client host:port (after proxy headers)"),
    "client_host": _host("client", "client_host", "client address (after proxy headers)"),
    "client_port": _integer(
        _PORT.format("client"), ("client",), "client_port", "client port", nullable=True
    ),
    "peer_addr": _address(
        "peer", "peer_addr", "the connection's peer host:port, before proxy headers"
    ),
    "peer_host": _host("peer", "peer_host", "the connection's peer address, before proxy headers"),
    "peer_port": _integer(
        _PORT.format("peer"), ("peer",), "peer_port", "the connection's peer port", nullable=True
    ),
    "method": _token("method", ("method",), "method", "request method"),
    "path": Field("_safe(path)", ("_enc(path)",), ("path",), "path", "path, percent-decoded"),
    "query": Field(
        "_safe(query)", ("_enc(query)",), ("query",), "query", "query string, without '?'"
    ),
    "full_path": Field(
        "target",
        ("_enc(target)",),
        ("target",),
        "full_path",
        "path (percent-encoded) and query, as uvicorn shows them",
    ),
    "request_line": Field(
        _REQUEST_LINE,
        (f"_enc({_REQUEST_LINE})",),
        ("method", "target", "version"),
        "request_line",
        "GET /path?query HTTP/1.1, as uvicorn shows it",
    ),
    "http_version": _token("version", ("version",), "http_version", "1.0, 1.1, 2 or 3"),
    "protocol": _token(
        "'HTTP/' + version", ("version",), "protocol", "HTTP/1.0, HTTP/1.1, HTTP/2, HTTP/3"
    ),
    "scheme": _token("scope['scheme']", ("scope",), "scheme", "http, https, ws or wss"),
    "type": _token("scope['type']", ("scope",), "type", "http or websocket"),
    "status": _integer("status", ("status",), "status", "response status code"),
    "status_code": Field(
        _STATUS_TEXT,
        (Lit('"'), _STATUS_TEXT, Lit('"')),
        ("status",),
        "status_code",
        "200 OK, as uvicorn shows it",
    ),
    "reason": Field(
        "(_reason(status) or '-')",
        (Lit('"'), "_reason(status)", Lit('"')),
        ("status",),
        "reason",
        "reason phrase: OK",
    ),
    "body_bytes": _integer("ex.bytes_sent", (), "body_bytes", "response body bytes"),
    "response_bytes": _integer(
        "_total(ex)",
        (),
        "response_bytes",
        "response head and body bytes (HTTP/1.1; - elsewhere)",
        nullable=True,
    ),
    "request_bytes": _integer("ex.body_received", (), "request_bytes", "request body bytes"),
    "duration": _number(
        "f'{duration:.6f}'",
        ("duration",),
        "duration",
        "seconds from the request head to the end of the response",
    ),
    "duration_ms": _number(
        "f'{duration * 1e3:.3f}'", ("duration",), "duration_ms", "the same in milliseconds"
    ),
    "duration_us": _number(
        "str(int(duration * 1e6))", ("duration",), "duration_us", "the same in microseconds"
    ),
    "request_id": Field(
        "(rid or '-')",
        ("('null' if rid is None else _enc(rid))",),
        ("rid",),
        "request_id",
        "the request id (request_id.enabled)",
    ),
    "pid": Field("_PID[0]", ("_PID[0]",), (), "pid", "the serving process's id"),
    "tls_version": Field(
        "(_tls_version(tls) or '-')",
        ("_js(_tls_version(tls))",),
        ("tls",),
        "tls_version",
        "TLSv1.3 (- for cleartext)",
    ),
    "tls_cipher": Field(
        "(_tls_cipher(tls) or '-')",
        ("_js(_tls_cipher(tls))",),
        ("tls",),
        "tls_cipher",
        "cipher suite (- for cleartext)",
    ),
    "user": Field(
        "(_safe(_user(_a)) if (_a := hin.get(b'authorization')) else '-')",
        ("(_js(_user(_a)) if (_a := hin.get(b'authorization')) else 'null')",),
        ("hin",),
        "user",
        "HTTP Basic user name",
        header_in=b"authorization",
    ),
}

# On WebSocket close lines only (missing on the others).
WEBSOCKET_FIELDS: dict[str, tuple[str, str]] = {
    "event": ("event", "request; handshake and close for WebSocket sessions"),
    "ws_messages_in": ("ex.messages_in", "messages received (WebSocket close lines)"),
    "ws_messages_out": ("ex.messages_out", "messages sent"),
    "ws_bytes_in": ("ex.bytes_in", "message payload bytes received"),
    "ws_bytes_out": ("ex.bytes_out", "message payload bytes sent"),
    "ws_close_code": ("ex.close_code", "the close code (1006: the connection was lost)"),
}


def _header_in(name: bytes, *, quote: bool = True) -> Field:
    field = _text(f"hin.get({name!r})", ("hin",), "", "", quote=quote)
    return Field(field.text, field.json, field.needs, "", header_in=name)


def _header_out(name: bytes, *, quote: bool = True) -> Field:
    field = _text(f"hout.get({name!r})", ("hout",), "", "", quote=quote)
    return Field(field.text, field.json, field.needs, "", header_out=name)


def _gunicorn_atoms() -> dict[str, Field]:
    # gunicorn.glogging.Logger.atoms: strings escape '"', r is the request target as
    # sent, H is "HTTP/1.1", T/D/M are whole seconds, microseconds and milliseconds.
    return {
        "h": FIELDS["client_host"],
        "l": Field("'-'", (Lit("null"),), (), "-"),
        "u": FIELDS["user"],
        "t": FIELDS["time_local"],
        "r": Field(
            "f'{method} {_safe(raw + qmark)} HTTP/{version}'",
            ("_enc(f'{method} {raw}{qmark} HTTP/{version}')",),
            ("method", "raw", "qmark", "version"),
            "request_line",
        ),
        "s": FIELDS["status"],
        "m": FIELDS["method"],
        "U": FIELDS["path"],
        "q": FIELDS["query"],
        "H": FIELDS["protocol"],
        "b": FIELDS["body_bytes"],
        "B": FIELDS["body_bytes"],
        "f": _header_in(b"referer"),
        "a": _header_in(b"user-agent"),
        "T": Field("str(int(duration))", ("f'{duration:.6f}'",), ("duration",), "duration"),
        "D": FIELDS["duration_us"],
        "M": Field(
            "str(int(duration * 1e3))", ("f'{duration * 1e3:.3f}'",), ("duration",), "duration_ms"
        ),
        "L": FIELDS["duration"],
        "p": Field("f'<{_PID[0]}>'", ("_PID[0]",), (), "pid"),
        # hypercorn's additions, which gunicorn does not have.
        "R": Field(
            "f'{method} {_safe(path)}{_safe(qmark)} HTTP/{version}'",
            ("_enc(f'{method} {path}{qmark} HTTP/{version}')",),
            ("method", "path", "qmark", "version"),
            "request_line",
        ),
        "st": FIELDS["reason"],
        "S": FIELDS["scheme"],
        "Uq": Field("_safe(path + qmark)", ("_enc(path + qmark)",), ("path", "qmark"), "full_path"),
    }


def _hypercorn_atoms() -> dict[str, Field]:
    # hypercorn.logging.AccessLogAtoms: h is host:port, r is "GET /path 1.1" (decoded
    # path, bare version), H is "1.1", b and B are the response's Content-Length, and
    # strings are not escaped (control characters still are, here).
    length = "hout.get(b'content-length')"
    atoms = _gunicorn_atoms()
    atoms.update(
        {
            "h": FIELDS["client_addr"],
            "r": Field(
                "f'{method} {_safe_unquoted(path)} {version}'",
                ("_enc(f'{method} {path} {version}')",),
                ("method", "path", "version"),
                "request_line",
            ),
            "R": Field(
                "f'{method} {_safe_unquoted(path + qmark)} {version}'",
                ("_enc(f'{method} {path}{qmark} {version}')",),
                ("method", "path", "qmark", "version"),
                "request_line",
            ),
            "H": FIELDS["http_version"],
            "b": Field(
                f"({length} or '-')",
                (f"_int_text({length})",),
                ("hout",),
                "body_bytes",
                header_out=b"content-length",
            ),
            "B": Field(
                f"({length} or '-')",
                (f"_int_text({length})",),
                ("hout",),
                "body_bytes",
                header_out=b"content-length",
            ),
            "U": Field("_safe_unquoted(path)", ("_enc(path)",), ("path",), "path"),
            "Uq": Field(
                "_safe_unquoted(path + qmark)",
                ("_enc(path + qmark)",),
                ("path", "qmark"),
                "full_path",
            ),
            "f": _header_in(b"referer", quote=False),
            "a": _header_in(b"user-agent", quote=False),
        }
    )
    return atoms


ATOMS: dict[str, dict[str, Field]] = {
    "gunicorn": _gunicorn_atoms(),
    "hypercorn": _hypercorn_atoms(),
}

_BRACED = re.compile(r"\{([^{}]+)\}([ioe])")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def resolve(name: str, atoms: str = "gunicorn") -> Field:
    """The field a `%(name)s` in a format means. Raises FormatError."""
    field = FIELDS.get(name) or ATOMS[atoms].get(name)
    if field is not None:
        return field
    if name in WEBSOCKET_FIELDS:
        expr, doc = WEBSOCKET_FIELDS[name]
        if name == "event":
            return Field("event", (Lit('"'), "event", Lit('"')), (), name, doc)
        return _integer(f"({expr} if ws else None)", (), name, doc, nullable=True)
    match = _BRACED.fullmatch(name)
    if match is None:
        raise FormatError(_unknown(name))
    inner, kind = match.groups()
    quote = atoms == "gunicorn"
    if kind == "e":
        field = _text(f"_env({inner!r})", (), f"env.{inner}", "", quote=quote)
        return field
    if not _HEADER_NAME.fullmatch(inner):
        raise FormatError(f"%({name})s: {inner!r} is not a header name (RFC 9110 §5.1)")
    lower = inner.lower().encode("latin-1")
    return _header_in(lower, quote=quote) if kind == "i" else _header_out(lower, quote=quote)


def _unknown(name: str) -> str:
    import difflib

    known = sorted({*FIELDS, *ATOMS["gunicorn"], *WEBSOCKET_FIELDS})
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown access-log field %({name})s.{hint} Fields: {', '.join(known)}; "
        "headers as %({Name}i)s (request) and %({Name}o)s (response), environment "
        "variables as %({NAME}e)s"
    )


def needs(names: tuple[str, ...]) -> list[str]:
    """The preamble locals `names` need, dependencies first, in PREAMBLES order."""
    wanted: set[str] = set()
    for name in names:
        wanted.add(name)
        wanted.update(_DEPENDS.get(name, ()))
    return [name for name in PREAMBLES if name in wanted]
