"""Logging, compatible with uvicorn's output and log-config files.

Loggers: "palfrey.error" (server messages), "palfrey.access" (one line per request) and
"palfrey.asgi" (trace of ASGI messages), all below "palfrey".

uvicorn names: the default config also gives "uvicorn", "uvicorn.error" and
"uvicorn.access" the same handlers, because applications and libraries log through
`logging.getLogger("uvicorn.error")` (FastAPI's docs suggest it) and should keep printing
when they move to Palfrey. Conversely, a log-config file written for uvicorn configures
"uvicorn.*" loggers only; when such a file leaves a "palfrey.*" logger unconfigured, that
logger takes the handlers, level and propagation of its "uvicorn.*" namesake, so the file
keeps working unchanged. Palfrey itself only ever logs to "palfrey.*".
"""

from __future__ import annotations

import json
import logging
import os
import sys
from copy import copy
from dataclasses import dataclass
from typing import Any, Literal, TextIO
from urllib.parse import quote

__all__ = [
    "LEVELS",
    "LOGGING_CONFIG",
    "TRACE_LOG_LEVEL",
    "AccessFormatter",
    "AccessLogger",
    "ColourizedFormatter",
    "DefaultFormatter",
    "JSONFormatter",
    "LoggingSettings",
    "configure_logging",
    "default_logging_config",
]

TRACE_LOG_LEVEL = 5
"""Below DEBUG: every ASGI message (uvicorn's "trace")."""

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE_LOG_LEVEL,
}

logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")

_ALIASES = (
    ("palfrey", "uvicorn"),
    ("palfrey.error", "uvicorn.error"),
    ("palfrey.access", "uvicorn.access"),
)

# The loggers --log-level sets, as uvicorn sets its three (apps log to uvicorn.error too).
_LEVELLED = ("palfrey.error", "palfrey.access", "palfrey.asgi", "uvicorn.error", "uvicorn.access")

_FG = {
    "blue": 34,
    "cyan": 36,
    "green": 32,
    "yellow": 33,
    "red": 31,
    "bright_red": 91,
    "bright_white": 97,
}


def _style(text: str, fg: str | None = None, *, bold: bool = False) -> str:
    prefix = (f"\033[{_FG[fg]}m" if fg else "") + ("\033[1m" if bold else "")
    return f"{prefix}{text}\033[0m"


def _colours_wanted(stream: TextIO) -> bool:
    # https://no-color.org and the FORCE_COLOR convention, then "is it a terminal".
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ColourizedFormatter(logging.Formatter):
    """Adds `%(levelprefix)s` ("INFO:     "), coloured when use_colors (default: a TTY).

    A record's `color_message` extra, when colours are on, replaces its message (as in
    uvicorn).
    """

    level_colours = {
        TRACE_LOG_LEVEL: "blue",
        logging.DEBUG: "cyan",
        logging.INFO: "green",
        logging.WARNING: "yellow",
        logging.ERROR: "red",
        logging.CRITICAL: "bright_red",
    }

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        use_colors: bool | None = None,
    ) -> None:
        self.use_colors = use_colors if use_colors is not None else self.should_use_colors()
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)

    def should_use_colors(self) -> bool:
        return _colours_wanted(sys.stderr)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record = copy(record)
        levelname = record.levelname
        padding = " " * max(0, 8 - len(levelname))
        if self.use_colors:
            colour = self.level_colours.get(record.levelno)
            levelname = _style(levelname, colour) if colour else levelname
            if "color_message" in record.__dict__:
                record.msg = record.__dict__["color_message"]
                record.__dict__["message"] = record.getMessage()
        record.__dict__["levelprefix"] = f"{levelname}:{padding}"
        return super().formatMessage(record)


class DefaultFormatter(ColourizedFormatter):
    """Server messages, written to stderr."""


class AccessFormatter(ColourizedFormatter):
    """Access lines: `%(client_addr)s`, `%(request_line)s`, `%(status_code)s` ("200 OK").

    The record's args are uvicorn's five (client_addr, method, path, http_version,
    status), so uvicorn's own AccessFormatter also works with Palfrey's access logger.
    """

    status_colours = {1: "bright_white", 2: "green", 3: "yellow", 4: "red", 5: "bright_red"}

    def should_use_colors(self) -> bool:
        return _colours_wanted(sys.stdout)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record = copy(record)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client_addr, method, path, http_version, status = args
            status_code = _status_text(int(status))  # type: ignore[call-overload]
            request_line = f"{method} {path} HTTP/{http_version}"
            if self.use_colors:
                status_code = _style(status_code, self.status_colours.get(int(status) // 100))  # type: ignore[call-overload]
                request_line = _style(request_line, bold=True)
            record.__dict__.update(
                client_addr=client_addr, request_line=request_line, status_code=status_code
            )
        return super().formatMessage(record)


def _status_text(status: int) -> str:
    import http  # imported on the first access line: not needed to read a configuration

    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} "


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the access fields."""

    _FIELDS = (
        "client_host",
        "client_port",
        "method",
        "path",
        "http_version",
        "status",
        "bytes",
        "duration_ms",
    )

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, self.datefmt),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in self._FIELDS:
            if field in record.__dict__:
                data[field] = record.__dict__[field]
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "palfrey.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "palfrey.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            "use_colors": None,
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "palfrey": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "palfrey.error": {"level": "INFO"},
        "palfrey.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}
"""The default dictConfig (uvicorn's, with the palfrey loggers beside uvicorn's names)."""


def default_logging_config(use_colors: bool | None = None, fmt: str = "text") -> dict[str, Any]:
    """A fresh copy of LOGGING_CONFIG with use_colors (or JSON lines) applied."""
    config: dict[str, Any] = json.loads(json.dumps(LOGGING_CONFIG))
    for name, formatter in config["formatters"].items():
        if fmt == "json":
            config["formatters"][name] = {"()": "palfrey.logging.JSONFormatter"}
        else:
            formatter["use_colors"] = use_colors
    return config


@dataclass(frozen=True)
class LoggingSettings:
    """The `logging` section as the plan resolved it: exactly one of `dict_config` (the
    default config or the inline table) and `file` (a --log-config file) is set."""

    dict_config: dict[str, Any] | None
    file: str | None
    #: Applied to Palfrey's loggers; None keeps the levels of the user's own config.
    level: str | None
    access_log: bool
    #: The config is the user's: palfrey.* loggers it leaves alone follow uvicorn.*.
    aliases: bool


def configure_logging(settings: LoggingSettings) -> None:
    """Apply the logging settings to the logging module (process-wide; call once).

    A `config` file or inline `dict_config` replaces the default config, as uvicorn's
    --log-config does; the level is then applied only when set explicitly (a file's own
    levels win otherwise). Disabling the access log removes the access logger's handlers.
    """
    import logging.config  # here, not at import: the validating process never applies it

    logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")
    # A reload (SIGHUP) configures again: undo what a previous access_log=False did.
    logging.getLogger("palfrey.access").disabled = False
    if settings.file is not None:
        _load_config_file(settings.file)
    elif settings.dict_config is not None:
        logging.config.dictConfig(json.loads(json.dumps(settings.dict_config)))
    if settings.aliases:
        _alias_uvicorn_loggers()
    if settings.level is not None:
        level = LEVELS[settings.level]
        for name in _LEVELLED:
            logging.getLogger(name).setLevel(level)
    if not settings.access_log:
        access = logging.getLogger("palfrey.access")
        access.handlers = []
        access.propagate = False
        access.disabled = True


def _load_config_file(path: str) -> None:
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as file:
            logging.config.dictConfig(json.load(file))
    elif path.endswith((".yaml", ".yml")):
        import yaml

        with open(path, encoding="utf-8") as file:
            logging.config.dictConfig(yaml.safe_load(file))
    else:
        # fileConfig's default disables every logger the file does not name, including
        # the application's; uvicorn passes False too.
        logging.config.fileConfig(path, disable_existing_loggers=False)


def _alias_uvicorn_loggers() -> None:
    for ours, theirs in _ALIASES:
        mine, other = logging.getLogger(ours), logging.getLogger(theirs)
        if mine.handlers or mine.level != logging.NOTSET:
            continue  # the config speaks about palfrey's logger itself
        if not other.handlers and other.level == logging.NOTSET:
            continue
        mine.handlers = list(other.handlers)
        mine.setLevel(other.level)
        mine.propagate = other.propagate
        mine.disabled = other.disabled


class AccessLogger:
    """Writes access-log lines to "palfrey.access".

    The HTTP core checks `enabled` (a plain attribute, decided once at construction) and
    calls `log` only when it is true, so a server with the access log off pays one
    attribute read per request.
    """

    __slots__ = ("enabled", "logger")

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("palfrey.access")
        self.enabled = (
            not self.logger.disabled
            and self.logger.isEnabledFor(logging.INFO)
            and self.logger.hasHandlers()
        )

    def log(
        self,
        client: tuple[str, int] | None,
        method: str,
        path: str,
        query_string: bytes,
        http_version: str,
        status: int,
        *,
        size: int | None = None,
        duration: float | None = None,
    ) -> None:
        """One request: `client` is scope["client"]; `size` response body bytes;
        `duration` seconds from request head to response end."""
        client_addr = f"{client[0]}:{client[1]}" if client else ""
        # Quoted like uvicorn: the decoded path must not smuggle spaces or control
        # characters into the log line.
        full_path = quote(path)
        if query_string:
            full_path = f"{full_path}?{query_string.decode('ascii', 'replace')}"
        self.logger.info(
            '%s - "%s %s HTTP/%s" %d',
            client_addr,
            method,
            full_path,
            http_version,
            status,
            extra={
                "client_host": client[0] if client else None,
                "client_port": client[1] if client else None,
                "method": method,
                "path": full_path,
                "http_version": http_version,
                "status": status,
                "bytes": size,
                "duration": duration,
                "duration_ms": None if duration is None else round(duration * 1000.0, 3),
            },
        )
