"""Access-log formats: parsing, escaping, conversions, the JSON layout, and the two write
paths (direct and through logging records) producing the same bytes."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest

from palfrey.accesslog.compile import DEFAULT_JSON_FIELDS, compile_format, parse
from palfrey.accesslog.fields import FormatError
from palfrey.accesslog.handler import AccessHandler
from palfrey.accesslog.sink import access_sink
from palfrey.logging import UVICORN_ACCESS_FORMAT, AccessFormatter, JSONFormatter


def exchange(
    path: str = "/a b",
    query: bytes = b"x=1",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] | None = ("10.0.0.1", 5000),
    status: int = 200,
    duration: float = 0.0125,
) -> SimpleNamespace:
    scope = {
        "type": "http",
        "client": client,
        "method": "GET",
        "path": path,
        "raw_path": quote(path).encode("ascii"),  # as the client sent it
        "query_string": query,
        "http_version": "1.1",
        "scheme": "http",
        "headers": headers or [],
        "extensions": {},
        "state": {},
    }
    return SimpleNamespace(
        scope=scope,
        status=status,
        bytes_sent=13,
        body_received=0,
        start_time=time.monotonic() - duration,
        response_start={"headers": [(b"Content-Type", b"text/plain")]},
        head_bytes=80,
    )


def render(fmt: str | None, ex: Any = None, **options: Any) -> str:
    ex = ex if ex is not None else exchange()
    return compile_format(fmt, **options).request(ex, time.monotonic())


def test_a_stray_percent_sign_is_refused() -> None:
    with pytest.raises(FormatError, match="position 3 starts no field"):
        parse("100% %(s)s")
    assert parse("100%% %(s)s") == ["100", "%", " ", ("s", "s")]


def test_an_unknown_field_names_the_closest() -> None:
    with pytest.raises(FormatError, match=r"%\(stauts\)s\. Did you mean status"):
        parse_fields("%(stauts)s")
    with pytest.raises(FormatError, match="not a header name"):
        parse_fields("%({bad header}i)s")


def parse_fields(fmt: str) -> None:
    from palfrey.accesslog.compile import fields_of

    fields_of(fmt)


def test_conversions_other_than_s() -> None:
    assert render("[%(s)5s] [%(s)-5s] [%(status)d] [%(body_bytes)04d]") == (
        "[  200] [200  ] [200] [0013]"
    )
    assert render("%(duration)0.2f") == "0.01"
    # A missing value under a numeric conversion keeps its width as text.
    assert render("[%(client_port)6d]", exchange(client=None)) == "[     -]"


def test_client_values_cannot_forge_lines() -> None:
    ex = exchange("/evil\nINFO: forged", headers=[(b"user-agent", b'a"b\x1bc')])
    line = render('%(U)s "%(a)s"', ex)
    assert "\n" not in line
    assert "\x1b" not in line
    assert line == '/evil\\x0aINFO: forged "a\\"b\\x1bc"'
    hypercorn = render('"%(a)s"', ex, atoms="hypercorn")
    assert hypercorn == '"a"b\\x1bc"'  # hypercorn leaves quotes as they are


def test_repeated_and_missing_headers() -> None:
    ex = exchange(headers=[(b"x-a", b"1"), (b"x-a", b"2")])
    assert (
        render("%({X-A}i)s %({x-b}i)s %({content-type}o)s %({missing}o)s", ex) == "2 - text/plain -"
    )


def test_the_default_json_line() -> None:
    line = json.loads(render(None, json=True))
    assert list(line) == ["time", "level", "logger", "message", "event", *DEFAULT_JSON_FIELDS]
    assert line["message"] == "GET /a b?x=1 HTTP/1.1 200"
    assert (line["status"], line["body_bytes"], line["client_port"]) == (200, 13, 5000)
    assert line["request_id"] is None
    assert 12.5 <= line["duration_ms"] < 1000


def test_a_json_line_keeps_the_values_json_needs_escaped() -> None:
    ex = exchange('/q"\\\n', query=b"a=%22", headers=[(b"user-agent", b'x"y')])
    line = json.loads(render("%(path)s %(query)s %({User-Agent}i)s", ex, json=True))
    assert line["path"] == '/q"\\\n'
    assert line["request_headers"] == {"user-agent": 'x"y'}


def test_unix_socket_clients_are_missing_not_broken() -> None:
    ex = exchange(client=None)
    assert render("%(client_addr)s %(h)s %(client_port)s", ex) == "- - -"
    line = json.loads(render("%(client_addr)s %(client_host)s %(client_port)s", ex, json=True))
    assert (line["client_addr"], line["client_host"], line["client_port"]) == (None, None, None)
    assert render(None, ex).startswith('INFO:      - "GET')  # uvicorn prints "" here too


# -- the two write paths ---------------------------------------------------------------------


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("palfrey.access")
    saved = (list(logger.handlers), list(logger.filters), logger.level, logger.propagate)
    disabled = logger.disabled
    yield logger
    logger.handlers, logger.filters, logger.level, logger.propagate = saved
    logger.disabled = disabled


def _both_paths(logger: logging.Logger, formatter: logging.Formatter) -> tuple[str, str]:
    """The line written directly, and the one written through a LogRecord (a filter on
    the logger makes the access log use records: an app's health-check filter)."""
    stream = io.StringIO()
    handler = AccessHandler("stdout")
    handler.stream = stream
    handler.setFormatter(formatter)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.disabled = False
    direct = access_sink(None)
    assert direct is not None
    assert type(direct).__name__ == "_Direct"
    direct.request(exchange())
    logger.addFilter(lambda record: True)
    records = access_sink(None)
    assert records is not None
    assert type(records).__name__ == "_Records"
    records.request(exchange())
    first, second = stream.getvalue().splitlines()
    return first, second


@pytest.mark.parametrize("colours", [False, True])
def test_uvicorn_lines_are_the_same_either_way(
    access_logger: logging.Logger, colours: bool
) -> None:
    direct, record = _both_paths(
        access_logger, AccessFormatter(UVICORN_ACCESS_FORMAT, use_colors=colours)
    )
    assert direct == record
    plain = re.sub(r"\x1b\[\d+m", "", direct)
    assert plain == 'INFO:     10.0.0.1:5000 - "GET /a%20b?x=1 HTTP/1.1" 200 OK'


def test_custom_format_lines_are_the_same_either_way(access_logger: logging.Logger) -> None:
    formatter = AccessFormatter(access_format='%(h)s "%(r)s" %(s)s %(b)s %(D)s')
    direct, record = _both_paths(access_logger, formatter)
    assert re.sub(r" \d+$", "", direct) == re.sub(r" \d+$", "", record)
    assert direct.startswith('10.0.0.1 "GET /a%20b?x=1 HTTP/1.1" 200 13 ')


def test_json_lines_are_the_same_either_way(access_logger: logging.Logger) -> None:
    direct, record = _both_paths(access_logger, JSONFormatter())
    mask = re.compile(r'"(time|duration_ms)":[^,]+,')
    assert mask.sub("", direct) == mask.sub("", record)


def test_a_filter_of_the_apps_still_works(access_logger: logging.Logger) -> None:
    """The common uvicorn recipe: a filter on the access logger hiding health checks."""
    stream = io.StringIO()
    handler = AccessHandler("stdout")
    handler.stream = stream
    handler.setFormatter(AccessFormatter(UVICORN_ACCESS_FORMAT, use_colors=False))
    access_logger.handlers = [handler]
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False
    access_logger.disabled = False
    access_logger.addFilter(lambda record: "/healthz" not in record.getMessage())
    sink = access_sink(None)
    assert sink is not None
    sink.request(exchange("/healthz", b""))
    sink.request(exchange("/orders", b""))
    assert stream.getvalue() == 'INFO:     10.0.0.1:5000 - "GET /orders HTTP/1.1" 200 OK\n'


def test_lines_of_a_loop_turn_are_written_together(tmp_path: Any) -> None:
    """Queued lines go out once per event-loop turn, as whole lines."""
    import asyncio

    path = tmp_path / "access.log"
    handler = AccessHandler(str(path))

    async def main() -> int:
        handler.bind_loop(asyncio.get_running_loop())
        for index in range(3):
            handler.write_line(f"line {index}")
        written = path.read_text()
        await asyncio.sleep(0)
        assert written == ""  # nothing before the turn ends
        return len(path.read_text().splitlines())

    assert asyncio.run(main()) == 3
    handler.close()


def test_long_batches_are_cut_at_line_ends(tmp_path: Any) -> None:
    import os

    from palfrey.accesslog import handler as module

    lines = [("x" * 1000) + str(index) for index in range(20)]
    data = ("\n".join(lines) + "\n").encode()
    writes: list[bytes] = []
    read, write = os.pipe()
    real = os.write

    def spy(fd: int, view: Any) -> int:
        writes.append(bytes(view))
        return real(fd, view)

    try:
        os.write = spy  # type: ignore[assignment]
        module._write_whole_lines(write, data)
    finally:
        os.write = real  # type: ignore[assignment]
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            assert pipe.read() == data
    assert len(writes) > 1
    assert all(len(piece) <= 4096 and piece.endswith(b"\n") for piece in writes)


def test_a_failing_destination_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    import os

    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE
    handler = AccessHandler("stdout")
    handler.stream = os.fdopen(write, "w")
    handler.write_line("lost")  # no loop bound: written at once
    assert "--- Logging error ---" in capsys.readouterr().err
    handler.stream.close()
