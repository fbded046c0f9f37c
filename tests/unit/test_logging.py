"""Logging: uvicorn-compatible formats, config files, levels and the access logger."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palfrey.logging import (
    TRACE_LOG_LEVEL,
    AccessFormatter,
    AccessLogger,
    DefaultFormatter,
    JSONFormatter,
    LoggingSettings,
    configure_logging,
    default_logging_config,
)
from tests.helpers.plans import make_plan

NAMES = (
    "",
    "palfrey",
    "palfrey.error",
    "palfrey.access",
    "palfrey.asgi",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "custom",
)


def _section(**values: Any) -> LoggingSettings:
    """The logging settings the plan makes of this `logging` section."""
    return make_plan(logging=values).logging


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    saved = {}
    for name in NAMES:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.disabled = handlers, propagate, disabled
        logger.setLevel(level)


def _record(msg: str, *args: Any, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("palfrey.error", level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def _access_record(status: int = 200) -> logging.LogRecord:
    args = ("127.0.0.1:5000", "GET", "/a%20b?x=1", "1.1", status)
    fmt = '%s - "%s %s HTTP/%s" %d'
    return logging.LogRecord("palfrey.access", logging.INFO, __file__, 1, fmt, args, None)


def test_trace_level() -> None:
    assert TRACE_LOG_LEVEL == 5
    assert logging.getLevelName(5) == "TRACE"


def test_default_formatter_levelprefix() -> None:
    formatter = DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False)
    assert formatter.format(_record("hello %s", "world")) == "INFO:     hello world"
    record = _record("x", level=logging.WARNING)
    assert formatter.format(record) == "WARNING:  x"


def test_colours() -> None:
    formatter = DefaultFormatter("%(levelprefix)s %(message)s", use_colors=True)
    record = _record("plain", color_message="\033[1mbold\033[0m")
    assert formatter.format(record) == "\033[32mINFO\033[0m:     \033[1mbold\033[0m"


def test_colours_follow_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DefaultFormatter("%(message)s").use_colors is False  # pytest's stderr is no TTY
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert DefaultFormatter("%(message)s").use_colors is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert AccessFormatter("%(message)s").use_colors is False


def test_access_formatter_matches_uvicorn() -> None:
    fmt = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
    ours = AccessFormatter(fmt, use_colors=False).format(_access_record())
    assert ours == 'INFO:     127.0.0.1:5000 - "GET /a%20b?x=1 HTTP/1.1" 200 OK'
    uvicorn_logging = pytest.importorskip("uvicorn.logging")
    theirs = uvicorn_logging.AccessFormatter(fmt, use_colors=False).format(_access_record())
    assert ours == theirs
    coloured = AccessFormatter(fmt, use_colors=True).format(_access_record(404))
    assert "\033[31m404 Not Found\033[0m" in coloured
    assert AccessFormatter(fmt, use_colors=False).format(_access_record(599)).endswith(" 599 ")


def test_default_config_streams(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_section(use_colors=False))
    logging.getLogger("palfrey.error").info("started")
    logging.getLogger("palfrey.error").debug("hidden")
    AccessLogger().log(("10.0.0.1", 1234), "GET", "/x y", b"q=1", "1.1", 204)
    logging.getLogger("uvicorn.error").warning("from an app")
    out, err = capsys.readouterr()
    assert out == 'INFO:     10.0.0.1:1234 - "GET /x%20y?q=1 HTTP/1.1" 204 No Content\n'
    assert err == "INFO:     started\nWARNING:  from an app\n"


def test_level_trace(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_section(level="trace", use_colors=False))
    assert logging.getLogger("palfrey.asgi").isEnabledFor(TRACE_LOG_LEVEL)
    logging.getLogger("palfrey.error").log(TRACE_LOG_LEVEL, "tiny")
    assert capsys.readouterr().err == "TRACE:    tiny\n"


def test_level_warning_hides_access(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_section(level="warning"))
    assert AccessLogger().enabled is False


def test_access_log_off(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_section(access_log=False))
    access = AccessLogger()
    assert access.enabled is False
    logging.getLogger("palfrey.access").info("should not appear")
    assert capsys.readouterr().out == ""


def test_access_log_extra_fields() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("custom")
    logger.handlers = [Keep()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    access = AccessLogger(logger)
    assert access.enabled
    access.log(None, "POST", "/up", b"", "2", 201, size=10, duration=0.0125)
    record = records[0]
    assert record.getMessage() == ' - "POST /up HTTP/2" 201'
    assert record.__dict__["bytes"] == 10
    assert record.__dict__["duration_ms"] == 12.5
    assert record.__dict__["client_host"] is None
    line = json.loads(JSONFormatter().format(record))
    assert line["status"] == 201
    assert line["method"] == "POST"
    assert line["level"] == "info"
    assert line["duration_ms"] == 12.5


def _write_configs(tmp_path: Path) -> dict[str, Path]:
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "custom %(name)s %(message)s"}},
        "handlers": {
            "out": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {"palfrey.error": {"handlers": ["out"], "level": "DEBUG", "propagate": False}},
    }
    json_path = tmp_path / "log.json"
    json_path.write_text(json.dumps(config))
    yaml_path = tmp_path / "log.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(config))
    ini_path = tmp_path / "log.ini"
    ini_path.write_text(
        "[loggers]\nkeys=root,palfrey_error\n\n"
        "[handlers]\nkeys=out\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_palfrey_error]\nlevel=DEBUG\nhandlers=out\nqualname=palfrey.error\n"
        "propagate=0\n\n"
        "[handler_out]\nclass=StreamHandler\nformatter=plain\nargs=(sys.stdout,)\n\n"
        "[formatter_plain]\nformat=custom %(name)s %(message)s\n"
    )
    return {"json": json_path, "yaml": yaml_path, "ini": ini_path}


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
def test_config_files(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("custom").setLevel(logging.INFO)  # an existing logger stays enabled
    configure_logging(_section(config=_write_configs(tmp_path)[kind]))
    logging.getLogger("palfrey.error").debug("debug kept")  # the file's level, not "info"
    assert capsys.readouterr().out == "custom palfrey.error debug kept\n"
    assert logging.getLogger("custom").disabled is False


def test_explicit_level_overrides_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(_section(config=_write_configs(tmp_path)["json"], level="warning"))
    logging.getLogger("palfrey.error").info("dropped")
    assert capsys.readouterr().out == ""


def test_inline_dict_config(capsys: pytest.CaptureFixture[str]) -> None:
    config = default_logging_config(use_colors=False)
    config["formatters"]["default"]["fmt"] = "[%(levelname)s] %(message)s"
    configure_logging(_section(dict_config=config))
    logging.getLogger("palfrey.error").warning("inline")
    assert capsys.readouterr().err == "[WARNING] inline\n"


def test_uvicorn_style_config_drives_palfrey_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    """A log config written for uvicorn (naming only uvicorn.* loggers) still works."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": "ACCESS %(client_addr)s %(request_line)s %(status_code)s",
                "use_colors": False,
            }
        },
        "handlers": {
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False}
        },
    }
    pytest.importorskip("uvicorn")
    configure_logging(_section(dict_config=config))
    access = AccessLogger()
    assert access.enabled
    access.log(("1.2.3.4", 9), "GET", "/", b"", "1.1", 200)
    assert capsys.readouterr().out == "ACCESS 1.2.3.4:9 GET / HTTP/1.1 200 OK\n"


def test_default_config_is_a_fresh_copy() -> None:
    first = default_logging_config(True)
    first["loggers"].clear()
    assert default_logging_config()["loggers"]
    assert default_logging_config(True)["formatters"]["access"]["use_colors"] is True


def test_reconfigure_turns_the_access_log_back_on(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_section(access_log=False))
    configure_logging(_section(use_colors=False))
    assert AccessLogger().enabled
    AccessLogger().log(("::1", 80), "GET", "/", b"", "1.1", 200)
    assert capsys.readouterr().out == 'INFO:     ::1:80 - "GET / HTTP/1.1" 200 OK\n'


def test_debug_level_reaches_uvicorn_error_for_apps(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_section(level="debug", use_colors=False))
    logging.getLogger("uvicorn.error").debug("app debug")
    assert capsys.readouterr().err == "DEBUG:    app debug\n"


def test_json_format_writes_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_section(format="json"))
    logging.getLogger("palfrey.error").info("hello %s", "there")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert (record["level"], record["logger"], record["message"]) == (
        "info",
        "palfrey.error",
        "hello there",
    )
