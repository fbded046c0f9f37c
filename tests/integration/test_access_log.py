"""The access log as an operator meets it: a real `palfrey` process, real clients (httpx
over HTTP/1.1 and HTTP/2 with TLS, the websockets library), lines read from its output
or its file. Every server binds port 0; every wait is bounded."""

from __future__ import annotations

import base64
import datetime
import os
import re
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.helpers.observe import access_records
from tests.helpers.process import ROOT, PalfreyProcess

pytestmark = pytest.mark.timeout(90)

APP_DIR = str(ROOT / "tests" / "integration")
GUNICORN_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
HYPERCORN_FORMAT = '%(h)s %(l)s %(l)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def _palfrey(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> PalfreyProcess:
    command = ["observability_app:app", "--app-dir", APP_DIR, "--host", "127.0.0.1"]
    return PalfreyProcess([*command, "--port", "0", *args], cwd=tmp_path, env=env)


def _lines_matching(proc: PalfreyProcess, pattern: str, count: int) -> list[str]:
    search = re.compile(pattern).search
    return proc.wait_for_lines(
        lambda line: search(line) is not None, count=count, what=repr(pattern)
    )


# -- JSON lines -----------------------------------------------------------------------------


def test_json_lines_for_http11_requests(tmp_path: Path) -> None:
    with _palfrey(tmp_path, "--logging-format", "json") as proc:
        proc.wait_until_serving()
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            assert client.get("/slow", params={"a": "1 2"}).status_code == 200
            assert client.post("/echo", content=b"x" * 1000).content == b"x" * 1000
        lines = access_records(proc, 3)[-2:]
    slow, echo = lines
    assert slow["event"] == "request"
    assert (slow["method"], slow["path"], slow["query"]) == ("GET", "/slow", "a=1+2")
    assert (slow["http_version"], slow["scheme"], slow["status"]) == ("1.1", "http", 200)
    assert slow["body_bytes"] == 4
    assert slow["request_bytes"] == 0
    # The app sleeps 50 ms; the line measures from the request head to the response end.
    assert 50.0 <= slow["duration_ms"] < 10_000
    assert slow["client_host"] == "127.0.0.1"
    assert isinstance(slow["client_port"], int)
    assert slow["client_port"] > 0
    assert proc.proc is not None
    assert slow["pid"] == proc.proc.pid
    assert slow["message"] == "GET /slow?a=1+2 HTTP/1.1 200"
    when = datetime.datetime.fromisoformat(slow["time"])
    assert abs(when.timestamp() - time.time()) < 60
    assert (echo["method"], echo["status"], echo["request_bytes"], echo["body_bytes"]) == (
        "POST",
        200,
        1000,
        1000,
    )
    assert 0.0 <= echo["duration_ms"] < 10_000
    assert echo["request_id"] is None  # request_id.enabled is off


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("pki")
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    return ca_path, cert_path, key_path


def test_json_lines_for_http2_over_tls(tmp_path: Path, pki: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pki
    fields = (
        "%(method)s %(path)s %(protocol)s %(http_version)s %(scheme)s %(status)s %(body_bytes)s "
        "%(request_bytes)s %(duration_ms)s %(tls_version)s %(tls_cipher)s %({x-out}o)s"
    )
    args = ["--http", "h2", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    args += ["--logging-format", "json", "--access-log-format", fields]
    with _palfrey(tmp_path, *args) as proc:
        proc.wait_for_port()
        url = f"https://127.0.0.1:{proc.port}"
        context = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(http2=True, verify=context, timeout=10) as client:
            response = client.post(url + "/echo", content=b"y" * 5000)
            assert response.http_version == "HTTP/2"
            slow = client.get(url + "/slow")
            assert slow.http_version == "HTTP/2"
        echo, slow_line = access_records(proc, 2)
    assert (echo["method"], echo["path"], echo["status"]) == ("POST", "/echo", 200)
    assert (echo["http_version"], echo["protocol"], echo["scheme"]) == ("2", "HTTP/2", "https")
    assert (echo["request_bytes"], echo["body_bytes"]) == (5000, 5000)
    assert echo["response_headers"] == {"x-out": "yes"}
    assert echo["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert isinstance(echo["tls_cipher"], str)
    assert echo["tls_cipher"]
    assert 50.0 <= slow_line["duration_ms"] < 10_000
    # Keys are the format's fields; the time, level, logger, message and event lead.
    assert list(echo)[:5] == ["time", "level", "logger", "message", "event"]


def test_websocket_session_lines(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    with _palfrey(tmp_path, "--logging-format", "json") as proc:
        proc.wait_until_serving()
        with connect(f"ws://127.0.0.1:{proc.port}/chat?room=1", open_timeout=10) as ws:
            for message in ("abc", "héllo", b"\x00\x01"):
                ws.send(message)
                assert ws.recv(timeout=10) == message
            time.sleep(0.05)
        lines = access_records(proc, 3)
    handshake, close = [line for line in lines if line["path"] == "/chat"]
    assert handshake["event"] == "handshake"
    assert (handshake["status"], handshake["query"], handshake["scheme"]) == (101, "room=1", "ws")
    assert handshake["message"] == "GET /chat?room=1 HTTP/1.1 101"
    assert close["event"] == "close"
    assert (close["ws_messages_in"], close["ws_messages_out"]) == (3, 3)
    # Payload bytes: "abc" 3, "héllo" 6 in UTF-8, two bytes.
    assert (close["ws_bytes_in"], close["ws_bytes_out"]) == (11, 11)
    assert close["ws_close_code"] == 1000
    assert 50.0 <= close["duration_ms"] < 30_000
    assert close["duration_ms"] >= handshake["duration_ms"]


# -- formats ------------------------------------------------------------------------------------

EVERY_FIELD = [
    "time",
    "time_local",
    "client_addr",
    "client_host",
    "client_port",
    "peer_addr",
    "peer_host",
    "peer_port",
    "method",
    "path",
    "query",
    "full_path",
    "request_line",
    "http_version",
    "protocol",
    "scheme",
    "type",
    "status",
    "status_code",
    "reason",
    "body_bytes",
    "response_bytes",
    "request_bytes",
    "duration",
    "duration_ms",
    "duration_us",
    "request_id",
    "pid",
    "tls_version",
    "tls_cipher",
    "user",
    "event",
    "{X-In}i",
    "{X-Out}o",
    "{OBSERVED_VARIABLE}e",
]


def test_a_custom_format_renders_every_field(tmp_path: Path) -> None:
    fmt = "|".join(f"%({name})s" for name in EVERY_FIELD)
    env = {"OBSERVED_VARIABLE": "from the environment"}
    args = ["--access-log-format", fmt, "--request-id-enabled", "--forwarded-allow-ips", "*"]
    with _palfrey(tmp_path, *args, env=env) as proc:
        proc.wait_until_serving("/status/204")
        auth = "Basic " + base64.b64encode(b"alice:secret").decode()
        headers = {
            "X-In": 'a "quoted" value',
            "X-Forwarded-For": "203.0.113.7",
            "X-Request-ID": "req-42",
            "Authorization": auth,
        }
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            response = client.post("/echo", params={"q": "1"}, content=b"abcd", headers=headers)
            assert response.status_code == 200
        line = _lines_matching(proc, r"\|POST\|", 1)[0]
    values = dict(zip(EVERY_FIELD, line.split("|"), strict=True))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", values["time"])
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", values["time_local"])
    assert values["client_addr"] == "203.0.113.7:0"  # from X-Forwarded-For (no port)
    assert (values["client_host"], values["client_port"]) == ("203.0.113.7", "0")
    assert values["peer_host"] == "127.0.0.1"
    assert values["peer_addr"] == f"127.0.0.1:{values['peer_port']}"
    assert int(values["peer_port"]) > 0
    assert (values["method"], values["path"], values["query"]) == ("POST", "/echo", "q=1")
    assert values["full_path"] == "/echo?q=1"
    assert values["request_line"] == "POST /echo?q=1 HTTP/1.1"
    assert (values["http_version"], values["protocol"], values["scheme"]) == (
        "1.1",
        "HTTP/1.1",
        "http",
    )
    assert (values["type"], values["event"]) == ("http", "request")
    assert (values["status"], values["status_code"], values["reason"]) == ("200", "200 OK", "OK")
    assert (values["body_bytes"], values["request_bytes"]) == ("4", "4")
    # The head (status line and fields) plus the 4-byte body, as the client received it.
    head = sum(len(name) + len(value) + 4 for name, value in response.headers.raw)
    assert int(values["response_bytes"]) == len(b"HTTP/1.1 200 OK\r\n") + head + 2 + 4
    assert 0 <= float(values["duration"]) < 10
    assert float(values["duration_ms"]) == pytest.approx(float(values["duration"]) * 1e3, abs=0.01)
    assert int(values["duration_us"]) == pytest.approx(float(values["duration"]) * 1e6, abs=10)
    assert values["request_id"] == "req-42"
    assert values["pid"] == str(proc.proc.pid if proc.proc else 0)
    assert (values["tls_version"], values["tls_cipher"]) == ("-", "-")
    assert values["user"] == "alice"
    assert values["{X-In}i"] == 'a \\"quoted\\" value'  # gunicorn's escaping of '"'
    assert values["{X-Out}o"] == "yes"
    assert values["{OBSERVED_VARIABLE}e"] == "from the environment"


def _gunicorn_line(
    fmt: str,
    *,
    client: str,
    method: str,
    target: str,
    status: int,
    sent: int,
    headers: dict[str, str],
    duration: float,
) -> str:
    """What gunicorn's own access logger writes for this request (gunicorn.glogging)."""
    from types import SimpleNamespace

    from gunicorn.config import Config
    from gunicorn.glogging import Logger, SafeAtoms

    path, _, query = target.partition("?")
    environ = {
        "REMOTE_ADDR": client,
        "REQUEST_METHOD": method,
        "RAW_URI": target,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": path,
        "QUERY_STRING": query,
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    response = SimpleNamespace(status=f"{status} OK", sent=sent, headers=[])
    request = SimpleNamespace(headers=[(k.upper(), v) for k, v in headers.items()])
    logger = Logger(Config())
    delta = datetime.timedelta(seconds=duration)
    return fmt % SafeAtoms(logger.atoms(response, request, environ, delta))


def test_gunicorn_format_strings_render_as_gunicorn(tmp_path: Path) -> None:
    fmt = GUNICORN_FORMAT + " %(m)s %(U)s %(q)s %(H)s %(B)s %(p)s %({x-in}i)s %({missing}i)s"
    with _palfrey(tmp_path, "--access-log-format", fmt) as proc:
        proc.wait_until_serving("/status/204")
        headers = {
            "Referer": "https://example.test/from",
            "User-Agent": 'agent "007"',
            "Authorization": "Basic " + base64.b64encode(b"bob:pw").decode(),
            "X-In": "in",
        }
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            assert client.get("/echo?a=1&b=%20", headers=headers).status_code == 200
        line = _lines_matching(proc, r"GET /echo", 1)[0]
        pid = proc.proc.pid if proc.proc else 0
    expected = _gunicorn_line(
        fmt,
        client="127.0.0.1",
        method="GET",
        target="/echo?a=1&b=%20",
        status=200,
        sent=0,
        headers=headers,
        duration=0.0,
    ).replace(f"<{os.getpid()}>", f"<{pid}>")
    stamp = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")
    assert stamp.search(line)
    assert stamp.sub("[time]", line) == stamp.sub("[time]", expected)


def test_gunicorn_duration_atoms(tmp_path: Path) -> None:
    with _palfrey(tmp_path, "--access-log-format", "%(T)s|%(D)s|%(M)s|%(L)s|%(D)d") as proc:
        proc.wait_until_serving("/status/204")
        httpx.get(proc.url + "/slow", timeout=10)
        line = _lines_matching(proc, r"^\d+\|\d+\|\d+\|\d+\.\d{6}\|\d+$", 2)[-1]
    seconds, micros, millis, decimal, micros_d = line.split("|")
    assert seconds == "0"
    assert 50_000 <= int(micros) < 10_000_000
    assert int(millis) == int(micros) // 1000
    assert float(decimal) == pytest.approx(int(micros) / 1e6, abs=2e-6)
    assert micros_d == micros


def _hypercorn_expected(pid: int, client: str, headers: dict[str, str]) -> str:
    """hypercorn.logging.AccessLogAtoms for this request, from its documented meaning."""
    return (
        f'{client} - - [time] "GET /echo 1.1" 200 - "{headers["Referer"]}" '
        f'"{headers["User-Agent"]}" GET /echo?a=1 1.1 OK http /echo?a=1 <{pid}>'
    )


def test_hypercorn_format_strings_render_as_hypercorn(tmp_path: Path) -> None:
    fmt = HYPERCORN_FORMAT + " %(R)s %(st)s %(S)s %(Uq)s %(p)s"
    args = ["--access-log-format", fmt, "--access-log-atoms", "hypercorn"]
    headers = {"Referer": "https://example.test/", "User-Agent": 'agent "1"'}
    with _palfrey(tmp_path, *args) as proc:
        proc.wait_until_serving("/status/204")
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            response = client.get("/echo?a=1", headers=headers)
            assert response.status_code == 200
        line = _lines_matching(proc, r'"GET /echo 1\.1"', 1)[0]
        pid = proc.proc.pid if proc.proc else 0
    stamp = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")
    client = line.split(" ", 1)[0]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", client)
    # b is the response's Content-Length header: the app sends one of "0".
    expected = _hypercorn_expected(pid, client, headers).replace(" 200 - ", " 200 0 ")
    assert stamp.sub("[time]", line) == expected
    hypercorn_logging = pytest.importorskip("hypercorn.logging")
    scope = {
        "type": "http",
        "http_version": "1.1",
        "client": (client.split(":")[0], int(client.split(":")[1])),
        "method": "GET",
        "scheme": "http",
        "path": "/echo",
        "query_string": b"a=1",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    summary = {"status": 200, "headers": [(b"content-length", b"0")]}
    atoms = hypercorn_logging.AccessLogAtoms(scope, summary, 0.0)
    theirs = fmt % atoms
    assert stamp.sub("[time]", line) == stamp.sub("[time]", theirs).replace(
        f"<{os.getpid()}>", f"<{pid}>"
    )


def test_uvicorn_default_line_is_unchanged(tmp_path: Path) -> None:
    with _palfrey(tmp_path) as proc:
        proc.wait_until_serving("/status/204?x=1")
        line = _lines_matching(proc, r"GET /status/204", 1)[0]
    assert re.fullmatch(
        r'INFO:     127\.0\.0\.1:\d+ - "GET /status/204\?x=1 HTTP/1\.1" 204 No Content', line
    )


# -- the destination ----------------------------------------------------------------------------


def _file_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("workers", [1, 2])
def test_file_destination_is_reopened_on_sigusr1(tmp_path: Path, workers: int) -> None:
    log = tmp_path / "access.log"
    args = ["--access-log-destination", str(log), "--access-log-format", "%(pid)s %(r)s"]
    args += ["--workers", str(workers)]
    with _palfrey(tmp_path, *args) as proc:
        proc.wait_until_serving("/status/204")
        _send_until(proc, lambda: len(_file_lines(log)) >= 1, "/before")
        moved = tmp_path / "access.log.1"
        log.rename(moved)  # logrotate's first step
        before = len(_file_lines(moved))
        proc.signal(signal.SIGUSR1)
        # Every serving process reopens: lines from each worker arrive in the new file.
        pids = _serving_pids(proc, workers)
        _send_until(proc, lambda: {line.split()[0] for line in _file_lines(log)} >= pids, "/after")
        settled = len(_file_lines(moved))
        for _ in range(20):
            httpx.get(proc.url + "/after", headers={"Connection": "close"}, timeout=10)
        time.sleep(0.3)
        assert len(_file_lines(moved)) == settled  # nothing goes to the moved file any more
    old, new = _file_lines(moved), _file_lines(log)
    assert before >= 1
    assert all("/after" not in line for line in old[:before])
    assert new
    assert all("/after" in line for line in new)
    assert all(re.fullmatch(r"\d+ GET /after HTTP/1\.1", line) for line in new)


def _serving_pids(proc: PalfreyProcess, workers: int) -> set[str]:
    if workers == 1:
        assert proc.proc is not None
        return {str(proc.proc.pid)}
    proc.wait_for_log("Received SIGUSR1; reopening log files")
    found = set(re.findall(r"Started worker process \[(\d+)\]", proc.log))
    assert len(found) == workers
    return found


def _send_until(proc: PalfreyProcess, done: Any, path: str) -> None:
    deadline = time.monotonic() + 20
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done:\n{proc.log}")
        httpx.get(proc.url + path, headers={"Connection": "close"}, timeout=10)
        time.sleep(0.02)
