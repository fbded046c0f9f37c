"""/metrics as Prometheus sees it: a real `palfrey` (with workers, killed workers, SIGHUP
rollovers and re-execs), scraped with httpx, parsed with prometheus_client's own text
parser, checked with promtool. Every server binds port 0; every wait is bounded."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.observe import Samples, metrics_url, parse, total
from tests.helpers.process import ROOT, PalfreyProcess
from tests.helpers.server import make_config, run_server
from tests.integration.observability_app import app

pytestmark = pytest.mark.timeout(120)

APP_DIR = str(ROOT / "tests" / "integration")


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def wait_for(url: str, check: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until `check` holds (a response is counted just after it is written)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"never true; last scrape: {samples}")
        time.sleep(0.1)


def _get_many(base: str, count: int) -> None:
    for _ in range(count):
        # A new connection each time, so the kernel spreads them over the workers.
        response = httpx.get(base + "/", headers={"Connection": "close"}, timeout=10)
        assert response.status_code == 200


MANIFEST = """
app = "observability_app:app"
app_dir = "{app_dir}"
[server]
host = "127.0.0.1"
port = 0
headers = ["X-Version: {version}"]
[workers]
count = {workers}
[logging]
access_log = false
[metrics]
enabled = true
listener = "127.0.0.1:0"
"""


def _manifest(path: Path, version: str, workers: int) -> None:
    path.write_text(MANIFEST.format(app_dir=APP_DIR, version=version, workers=workers))


def _worker_pids(proc: PalfreyProcess) -> set[int]:
    started = {int(m) for m in re.findall(r"Started worker process \[(\d+)\]", proc.log)}
    gone = {int(m) for m in re.findall(r"Worker \[(\d+)\] (?:exited|died)", proc.log)}
    return started - gone


def test_counts_across_workers_kills_and_rollovers(tmp_path: Path) -> None:
    """One endpoint for two workers; counts stay exact when a worker is SIGKILLed and
    replaced and through a SIGHUP rollover with a changed manifest."""
    manifest = tmp_path / "palfrey.toml"
    _manifest(manifest, "v1", 2)
    with PalfreyProcess(["--config", str(manifest)], cwd=tmp_path) as proc:
        proc.wait_until_serving("/status/204")
        url = metrics_url(proc)
        proc.wait_for_log("Started worker process", count=2)
        _get_many(proc.url, 30)
        expected = 31  # and the readiness probe
        samples = wait_for(url, lambda s: total(s, "palfrey_requests_total") == expected)
        assert value(samples, "palfrey_workers") == 2
        assert value(samples, "palfrey_workers_spawned_total") == 2
        count = value(samples, "palfrey_request_duration_seconds_count", protocol="HTTP/1.1")
        assert count == expected
        assert value(samples, "palfrey_response_body_bytes_total", protocol="HTTP/1.1") == 30 * len(
            b"Hello, world!"
        )
        lag_pids = {
            dict(labels)["pid"]
            for name, labels in samples
            if name == "palfrey_event_loop_lag_seconds"
        }
        assert lag_pids == {str(pid) for pid in _worker_pids(proc)}
        first_hash = _config_info(samples)["hash"]
        assert _config_info(samples)["manifest"] == str(manifest)

        # A worker killed outright: its counts stay, its replacement counts on.
        victim = min(_worker_pids(proc))
        proc_kill(victim)
        proc.wait_for_log("Started worker process", count=3)
        proc.wait_for_log(f"Worker [{victim}] died")
        samples = wait_for(url, lambda s: value(s, "palfrey_workers") == 2)
        assert total(samples, "palfrey_requests_total") == expected
        assert value(samples, "palfrey_worker_restarts_total", reason="crash") == 1
        _get_many(proc.url, 10)
        expected += 10
        wait_for(url, lambda s: total(s, "palfrey_requests_total") == expected)

        # A SIGHUP rollover to a changed manifest: every worker replaced, nothing lost.
        _manifest(manifest, "v2", 2)
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("Reload complete", timeout=60)
        samples = wait_for(
            url, lambda s: value(s, "palfrey_config_reloads_total", outcome="success") == 1
        )
        assert total(samples, "palfrey_requests_total") == expected
        assert value(samples, "palfrey_worker_restarts_total", reason="reload") == 2
        assert value(samples, "palfrey_workers_spawned_total") == 5
        assert _config_info(samples)["hash"] != first_hash
        assert httpx.get(proc.url + "/").headers["x-version"] == "v2"
        expected += 1
        _get_many(proc.url, 5)
        expected += 5
        wait_for(url, lambda s: total(s, "palfrey_requests_total") == expected)

        # An unchanged manifest is an "unchanged" reload; a broken one a "failure".
        manifest.write_text("this is [not toml")
        proc.signal(signal.SIGHUP)
        wait_for(url, lambda s: value(s, "palfrey_config_reloads_total", outcome="failure") == 1)


def proc_kill(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


def _config_info(samples: Samples) -> dict[str, str]:
    for (name, labels), found in samples.items():
        if name == "palfrey_config_info":
            assert found == 1.0
            return dict(labels)
    raise AssertionError("no palfrey_config_info")


def test_single_process_reload_keeps_counts_and_changes_the_hash(tmp_path: Path) -> None:
    """One process re-executes itself on SIGHUP: the counts cross the exec."""
    manifest = tmp_path / "palfrey.toml"
    _manifest(manifest, "v1", 1)
    with PalfreyProcess(["--config", str(manifest)], cwd=tmp_path) as proc:
        proc.wait_until_serving("/status/204")
        url = metrics_url(proc)
        _get_many(proc.url, 7)
        samples = wait_for(url, lambda s: total(s, "palfrey_requests_total") == 8)
        first = _config_info(samples)
        assert "palfrey_workers" not in {name for name, _ in samples}
        _manifest(manifest, "v2", 1)
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("Metrics on http://", count=2, timeout=30)
        url = _metrics_url_last(proc)
        served = 0
        deadline = time.monotonic() + 20
        while True:
            response = httpx.get(proc.url + "/", timeout=10)  # queued across the exec
            served += 1
            if response.headers.get("x-version") == "v2":
                break
            assert time.monotonic() < deadline, proc.log
            time.sleep(0.05)
        samples = wait_for(url, lambda s: total(s, "palfrey_requests_total") == 8 + served)
        assert value(samples, "palfrey_config_reloads_total", outcome="success") == 1
        assert _config_info(samples)["hash"] != first["hash"]


def _metrics_url_last(proc: PalfreyProcess) -> str:
    ports = re.findall(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics", proc.log)
    return f"http://127.0.0.1:{ports[-1]}/metrics"


# -- in one process: what each kind of traffic counts ---------------------------------------------


@pytest.fixture
def metered() -> Iterator[tuple[Any, str]]:
    config = make_config(
        "httptools",
        metrics={"enabled": True, "listener": "127.0.0.1:0"},
        limits={"max_body_size": 100},
        timeouts={"header_read": 0.3, "graceful_shutdown": 2.0},
    )
    with run_server(app, config=config) as running:
        server = running.server
        deadline = time.monotonic() + 10
        while server._metrics_server is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        host, port = server._metrics_server.sockets[0].getsockname()[:2]
        yield running, f"http://{host}:{port}/metrics"


def _raw(address: tuple[str, int], data: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection(address, timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_refusals_are_counted_by_reason(metered: tuple[Any, str]) -> None:
    running, url = metered
    assert _raw(running.address, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )
    big = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    assert _raw(running.address, big).startswith(b"HTTP/1.1 413")
    assert _raw(running.address, b"GET / HTTP/1.1\r\nHost: x\r\n").startswith(b"HTTP/1.1 408")
    samples = wait_for(
        url, lambda s: value(s, "palfrey_requests_refused_total", reason="header_timeout") == 1
    )
    assert value(samples, "palfrey_requests_refused_total", reason="malformed") == 1
    assert value(samples, "palfrey_requests_refused_total", reason="body_size") == 1
    assert value(samples, "palfrey_requests_refused_total", reason="concurrency") == 0


def test_methods_statuses_and_bytes(metered: tuple[Any, str]) -> None:
    running, url = metered
    with httpx.Client(base_url=running.url, timeout=10) as client:
        client.get("/status/404")
        client.post("/echo", content=b"z" * 50)
        client.request("PURGE", "/")  # not one of the known methods: counted as "other"
        client.get("/status/503")
    samples = wait_for(url, lambda s: total(s, "palfrey_requests_total") == 4)
    assert total(samples, "palfrey_requests_total", method="GET", status_class="4xx") == 1
    assert total(samples, "palfrey_requests_total", method="GET", status_class="5xx") == 1
    assert total(samples, "palfrey_requests_total", method="POST", status_class="2xx") == 1
    assert total(samples, "palfrey_requests_total", method="other", status_class="2xx") == 1
    assert value(samples, "palfrey_request_body_bytes_total", protocol="HTTP/1.1") == 50


def test_websocket_sessions_and_connections(metered: tuple[Any, str]) -> None:
    from websockets.asyncio.client import connect

    running, url = metered
    host, port = running.address

    async def session() -> Samples:
        async with connect(f"ws://{host}:{port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            return await asyncio.to_thread(
                wait_for, url, lambda s: value(s, "palfrey_websocket_sessions") == 1
            )

    during = asyncio.run(session())
    assert value(during, "palfrey_connections") >= 1
    assert total(during, "palfrey_requests_total", protocol="WebSocket", status_class="1xx") == 1
    after = wait_for(
        url, lambda s: value(s, "palfrey_websocket_messages_total", direction="in") == 1
    )
    assert value(after, "palfrey_websocket_messages_total", direction="out") == 1
    assert value(after, "palfrey_websocket_bytes_total", direction="in") == 5


def test_promtool_finds_no_problem(metered: tuple[Any, str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus); .ci/run installs it")
    running, url = metered
    httpx.get(running.url + "/slow", timeout=10)
    wait_for(url, lambda s: total(s, "palfrey_requests_total") == 1)
    # promtool lints the Prometheus text format (what a scrape without Accept gets).
    text = httpx.get(url, timeout=10).text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # not even a lint warning
    assert "palfrey_request_duration_seconds_bucket" in text


def test_the_metrics_listener_answers_only_metrics(metered: tuple[Any, str]) -> None:
    _, url = metered
    base = url.removesuffix("/metrics")
    assert httpx.get(base + "/", timeout=10).status_code == 404
    assert httpx.post(url, timeout=10).status_code == 405
    head = httpx.head(url, timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    open_metrics = httpx.get(url, headers={"Accept": "application/openmetrics-text"}, timeout=10)
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


def test_http2_requests_and_streams() -> None:
    import threading

    config = make_config(
        "httptools",
        http2={"enabled": True},
        metrics={"enabled": True, "listener": "127.0.0.1:0"},
    )
    with run_server(app, config=config) as running:
        server = running.server
        assert server._metrics_server is not None
        host, port = server._metrics_server.sockets[0].getsockname()[:2]
        url = f"http://{host}:{port}/metrics"
        with httpx.Client(http1=False, http2=True, base_url=running.url, timeout=10) as client:
            for _ in range(5):
                assert client.get("/").http_version == "HTTP/2"
            waiting = threading.Thread(target=lambda: client.get("/wait?3"))
            waiting.start()
            during = wait_for(url, lambda s: value(s, "palfrey_streams", protocol="HTTP/2") == 1)
            waiting.join(15)
    assert value(during, "palfrey_connections") == 1  # one HTTP/2 connection
    assert total(during, "palfrey_requests_total", protocol="HTTP/2", status_class="2xx") == 5
    assert value(during, "palfrey_request_duration_seconds_count", protocol="HTTP/2") == 5
