"""The small functions compiled access-log formats call (palfrey.accesslog.compile).

Each is cheap on the common input and cached where its input repeats (paths, status
codes, the current second): an access line is written for every request, so these run
on the hot path whenever the access log is on.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from json.encoder import encode_basestring as _json_string
from typing import Any
from urllib.parse import quote

__all__ = [
    "clf_time",
    "iso_time",
    "json_float",
    "json_int",
    "json_str",
    "quoted_path",
    "reason",
    "safe",
    "safe_unquoted",
    "status_text",
    "tls_cipher",
    "tls_version",
    "user",
]

_CACHE_MAX = 4096
QUOTED: dict[str, str] = {}
"""quoted_path's cache (compiled lines read it directly: a dict lookup, no call)."""
STATUS_TEXT: dict[int, str] = {}
"""status_text's cache, likewise."""
_REASONS: dict[int, str] = {}


def quoted_path(path: str) -> str:
    """The path percent-quoted as uvicorn's access line shows it (no space or control
    character can reach the line)."""
    try:
        return QUOTED[path]
    except KeyError:
        pass
    text = quote(path)
    if len(QUOTED) >= _CACHE_MAX:
        QUOTED.clear()
    QUOTED[path] = text
    return text


def status_text(status: int) -> str:
    """ "200 OK", as uvicorn's access line shows a status."""
    try:
        return STATUS_TEXT[status]
    except KeyError:
        pass
    text = f"{status} {reason(status)}"
    if len(STATUS_TEXT) < _CACHE_MAX:
        STATUS_TEXT[status] = text
    return text


def reason(status: int) -> str:
    """The reason phrase of a status code ("" for one HTTP does not define)."""
    try:
        return _REASONS[status]
    except KeyError:
        pass
    import http  # first use only: reading a configuration does not need it

    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    if len(_REASONS) < _CACHE_MAX:
        _REASONS[status] = phrase
    return phrase


# CWE-117: a value from the request (a decoded path, a header) must not be able to start
# a new log line or write terminal escapes. Control characters become \xNN; gunicorn
# also writes a double quote as \" (its formats put values between quotes).
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_CONTROL_QUOTE = {**_CONTROL, ord('"'): '\\"'}


def safe(value: str | None) -> str:
    """A request-supplied value for a text line: "-" when absent, control characters and
    double quotes escaped."""
    if value is None:
        return "-"
    if value.isprintable() and '"' not in value:
        return value
    return value.translate(_CONTROL_QUOTE)


def safe_unquoted(value: str | None) -> str:
    """As `safe`, leaving double quotes as they are (hypercorn's atoms do)."""
    if value is None:
        return "-"
    if value.isprintable():
        return value
    return value.translate(_CONTROL)


def user(authorization: str | None) -> str | None:
    """The user name of HTTP Basic authentication (RFC 7617), as gunicorn's `u` atom."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded.decode("latin-1").partition(":")[0]


_TLS_NAMES = {0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def tls_version(tls: dict[str, Any] | None) -> str | None:
    """ "TLSv1.3" from the ASGI `tls` extension (None for cleartext)."""
    if not tls:
        return None
    return _TLS_NAMES.get(tls.get("tls_version") or 0)


def tls_cipher(tls: dict[str, Any] | None) -> str | None:
    """The OpenSSL name of the connection's cipher suite (None for cleartext)."""
    if not tls or tls.get("cipher_suite") is None:
        return None
    from palfrey.transports.tls_scope import cipher_name

    return cipher_name(tls["cipher_suite"])


# -- time: formatted once a second ------------------------------------------------------

_clf_second = -1
_clf_text = ""
_iso_second = -1
_iso_prefix = ""
_iso_zone = ""


def clf_time(wall: float) -> str:
    """[10/Oct/2000:13:55:36 -0700], the Common Log Format time (gunicorn's `t`)."""
    global _clf_second, _clf_text
    second = int(wall)
    if second != _clf_second:
        _clf_second = second
        _clf_text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
    return _clf_text


ISO_NOW = [-1, ""]
"""[millisecond, text] of the last iso_time: compiled lines read it without a call while
the millisecond is the same (many lines share one under load)."""


def iso_time(wall: float) -> str:
    """2000-10-10T13:55:36.123+02:00: ISO 8601 local time with milliseconds."""
    global _iso_second, _iso_prefix, _iso_zone
    milli = int(wall * 1000)
    if milli == ISO_NOW[0]:
        return str(ISO_NOW[1])
    second = milli // 1000
    if second != _iso_second:
        _iso_second = second
        local = time.localtime(second)
        _iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        zone = time.strftime("%z", local)
        _iso_zone = f"{zone[:3]}:{zone[3:]}" if len(zone) == 5 else zone
    text = f"{_iso_prefix}.{milli - second * 1000:03d}{_iso_zone}"
    ISO_NOW[0], ISO_NOW[1] = milli, text
    return text


# -- JSON fragments -----------------------------------------------------------------------


def json_str(value: str | None) -> str:
    """A JSON string (escaped by the json module's C encoder), or null."""
    return "null" if value is None else _json_string(value)


def json_int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def json_float(value: float | None, digits: int = 3) -> str:
    return "null" if value is None else repr(round(value, digits))


encode_json_string = _json_string
"""A JSON string literal of a str (the json module's C encoder)."""

_PID = os.getpid()
PID_TEXT = [str(_PID)]
"""This process's id as text, for compiled lines to read without a call (os.getpid() is
a system call); kept current across fork."""


def _forked() -> None:
    global _PID
    _PID = os.getpid()
    PID_TEXT[0] = str(_PID)


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's id (os.getpid() is a system call; this is a global read)."""
    return _PID
