"""The supervisor as an operator meets it: a real `palfrey --workers N` process, real
signals, real HTTP clients. Every server binds port 0 and the port is read back from
the log; every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.process import PalfreyProcess

pytestmark = pytest.mark.timeout(90)

APP = """
import asyncio, os, sys

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "lifespan.") + ".complete"
            await send({"type": kind})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/slow":
        os.write(1, b"slow request started\\n")  # one write: workers share the pipe
        await asyncio.sleep(1.5)
    if scope["path"] == "/block":
        import time; time.sleep(30)
    body = str(os.getpid()).encode()
    if scope["path"] == "/pydantic":
        body = f"{os.getpid()} {'pydantic' in sys.modules}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"""

MANIFEST = """
app = "app:app"
[server]
host = "127.0.0.1"
port = 0
headers = ["X-Config: {value}"]
{extra}
[timeouts]
graceful_shutdown = "10s"
[logging]
access_log = false
"""


def _manifest(value: str, extra: str = "") -> str:
    return MANIFEST.format(value=value, extra=extra)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "palfrey.toml").write_text(_manifest("v1"))
    return tmp_path


def _worker_pids(proc: PalfreyProcess) -> set[int]:
    started = {int(m) for m in re.findall(r"Started worker process \[(\d+)\]", proc.log)}
    gone = {int(m) for m in re.findall(r"Worker \[(\d+)\] (?:exited|died)", proc.log)}
    return started - gone


def _get(url: str) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.get(url, headers={"Connection": "close"})


def test_two_workers_serve_and_a_killed_one_is_replaced(site: Path) -> None:
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        assert proc.wait_until_serving().status_code == 200
        proc.wait_for_log("Application startup complete", count=2)
        pids = _worker_pids(proc)
        assert len(pids) == 2
        seen = {int(_get(proc.url + "/").text) for _ in range(30)}
        assert seen <= pids
        # Workers receive the Plan and never import pydantic.
        for _ in range(10):
            worker, loaded = _get(proc.url + "/pydantic").text.split()
            assert int(worker) in pids
            assert loaded == "False"

        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        proc.wait_for_log(f"Worker [{victim}] died with signal SIGKILL", timeout=10)
        proc.wait_for_log("Started worker process", count=3, timeout=10)
        proc.wait_for_log("Application startup complete", count=3, timeout=10)
        replacement = _worker_pids(proc) - pids
        assert len(replacement) == 1
        deadline = time.monotonic() + 10
        answered: set[int] = set()
        while not replacement <= answered and time.monotonic() < deadline:
            answered.add(int(_get(proc.url + "/").text))
        assert victim not in answered
        assert all(_get(proc.url + "/").status_code == 200 for _ in range(5))

        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_sigterm_to_the_whole_process_group_stops_cleanly(site: Path) -> None:
    """systemd's default stop (KillMode=control-group), `timeout` and `kill -TERM -PGID`
    signal every process at once: each worker drains and exits 0, and the supervisor
    reads those statuses (none is taken for a crash and replaced) and exits 0."""
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        pids = _worker_pids(proc)
        assert proc.proc is not None
        os.killpg(proc.proc.pid, signal.SIGTERM)  # the server leads its own session
        assert proc.wait(20) == 0
        for pid in pids:
            assert f"Worker [{pid}] exited with exit code 0" in proc.log, proc.log
        assert "died" not in proc.log
        assert proc.count("Started worker process") == 2


def test_sigterm_drains_in_flight_requests(site: Path) -> None:
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        results: list[int | str] = []

        def slow() -> None:
            try:
                results.append(_get(proc.url + "/slow").status_code)
            except httpx.HTTPError as exc:
                results.append(repr(exc))

        threads = [threading.Thread(target=slow) for _ in range(6)]
        for thread in threads:
            thread.start()
        # In flight, not merely sent: connections still in the accept queue when the
        # listeners close are refused by the kernel, whatever the server does.
        proc.wait_for_log("slow request started", count=6)
        proc.signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
        assert results == [200] * 6
        assert proc.wait(20) == 0
        assert "Stopping parent process" in proc.log


def _load(
    url: str,
    *,
    total: int,
    clients: int,
    stop: threading.Event,
    halt: threading.Event | None = None,
) -> tuple[list[str], dict[str, int]]:
    """`total` GETs over `clients` keep-alive connections (fewer if `halt` is set first);
    failures and header values."""
    failures: list[str] = []
    values: dict[str, int] = {}
    lock = threading.Lock()

    def run(count: int) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(count):
                if halt is not None and halt.is_set():
                    return
                try:
                    response = client.get(url)
                    value = response.headers.get("x-config", "?")
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, value = False, repr(exc)
                with lock:
                    if ok:
                        values[value] = values.get(value, 0) + 1
                    else:
                        failures.append(value)

    threads = [threading.Thread(target=run, args=(total // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    return failures, values


def test_sighup_rolls_out_a_changed_manifest_without_failed_requests(site: Path) -> None:
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        done = threading.Event()
        outcome: list[tuple[list[str], dict[str, int]]] = []
        loader = threading.Thread(
            target=lambda: outcome.append(_load(proc.url + "/", total=2000, clients=4, stop=done))
        )
        loader.start()
        time.sleep(0.3)
        (site / "palfrey.toml").write_text(_manifest("v2"))
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("Reload complete", timeout=30)
        loader.join(60)
        failures, values = outcome[0]
        assert failures == []
        assert sum(values.values()) == 2000
        assert _get(proc.url + "/").headers["x-config"] == "v2"
        assert _get(proc.url + "/pydantic").text.endswith(" False")  # the parent re-read it
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_repeated_sighup_rollouts_under_load_fail_no_request(site: Path) -> None:
    # Issue 6: every worker is replaced three times while keep-alive clients send
    # without pause; stopping workers drain (RFC 9112 §9.6) so no request fails. The
    # clients never retry: a failure is counted as one.
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        done = threading.Event()
        outcome: list[tuple[list[str], dict[str, int]]] = []
        loader = threading.Thread(
            target=lambda: outcome.append(_load(proc.url + "/", total=6000, clients=6, stop=done))
        )
        loader.start()
        for round_ in range(1, 4):
            time.sleep(0.2)
            (site / "palfrey.toml").write_text(_manifest(f"v{round_ + 1}"))
            proc.signal(signal.SIGHUP)
            proc.wait_for_log("Reload complete", count=round_, timeout=30)
            if done.is_set():
                break
        loader.join(60)
        failures, values = outcome[0]
        assert failures == []
        assert sum(values.values()) == 6000
        assert len(values) >= 2, values  # the load spanned at least one rollout
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_max_requests_recycles_workers_under_load_without_failed_requests(site: Path) -> None:
    (site / "palfrey.toml").write_text(_manifest("v1", "[limits]\nmax_requests = 300"))
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        done, halt = threading.Event(), threading.Event()
        outcome: list[tuple[list[str], dict[str, int]]] = []
        loader = threading.Thread(
            target=lambda: outcome.append(
                _load(proc.url + "/", total=100_000, clients=4, stop=done, halt=halt)
            )
        )
        loader.start()
        # Two recycled workers have drained and exited while the clients kept sending.
        proc.wait_for_log("exited with exit code 0", count=2, timeout=40)
        halt.set()
        loader.join(60)
        failures, values = outcome[0]
        assert failures == []
        assert sum(values.values()) > 600
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_sighup_with_a_broken_manifest_keeps_serving(site: Path) -> None:
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        proc.wait_until_serving()
        pids = _worker_pids(proc)
        (site / "palfrey.toml").write_text(_manifest("v2", 'prot = 1\nbacklog = "many"'))
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("Reload failed, keeping the current configuration")
        proc.wait_for_log("server.prot")
        proc.wait_for_log("server.backlog")
        response = _get(proc.url + "/")
        assert response.headers["x-config"] == "v1"
        assert _worker_pids(proc) == pids
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def _configmap(directory: Path, version: str, text: str) -> None:
    """Publish `text` the way the kubelet updates a mounted ConfigMap: a new timestamped
    directory, then an atomic rename of the `..data` symlink onto it."""
    stamp = directory / f"..{version}"
    stamp.mkdir()
    (stamp / "palfrey.toml").write_text(text)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.replace(tmp, directory / "..data")
    if not (directory / "palfrey.toml").is_symlink():
        (directory / "palfrey.toml").symlink_to(Path("..data") / "palfrey.toml")


def test_configmap_symlink_swap_reloads(site: Path) -> None:
    mount = site / "etc"
    mount.mkdir()
    extra = "reload_on_change = true"
    _configmap(mount, "2026_01_01", _manifest("v1", extra))
    args = ["--config", "etc/palfrey.toml", "--workers", "2"]
    with PalfreyProcess(args, cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        old = sorted(mount.glob("..2026_01_01"))[0]
        _configmap(mount, "2026_01_02", _manifest("v2", extra))
        shutil.rmtree(old)
        proc.wait_for_log("changed; reloading the configuration", timeout=10)
        proc.wait_for_log("Reload complete", timeout=30)
        assert _get(proc.url + "/").headers["x-config"] == "v2"
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_ttin_and_ttou_change_the_worker_count(site: Path) -> None:
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        proc.signal(signal.SIGTTIN)
        proc.wait_for_log("now 3 workers")
        proc.wait_for_log("Application startup complete", count=3)
        assert len(_worker_pids(proc)) == 3
        proc.signal(signal.SIGTTOU)
        proc.wait_for_log("now 2 workers")
        proc.wait_for_log("exited with exit code 0")
        assert len(_worker_pids(proc)) == 2
        assert _get(proc.url + "/").status_code == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_hung_worker_is_replaced(site: Path) -> None:
    args = [
        "--config", "palfrey.toml", "--workers", "2",
        "--timeout-worker-healthcheck", "1", "--workers-healthcheck-interval", "0.5",
    ]  # fmt: skip
    with PalfreyProcess(args, cwd=site) as proc:
        proc.wait_until_serving()
        proc.wait_for_log("Application startup complete", count=2)
        threading.Thread(target=lambda: _quiet_get(proc.url + "/block"), daemon=True).start()
        proc.wait_for_log("did not answer the health check", timeout=10)
        proc.wait_for_log("Application startup complete", count=3, timeout=10)
        assert _get(proc.url + "/").status_code == 200


def _quiet_get(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=20)


def test_crash_loop_gives_up_with_a_clear_message(site: Path) -> None:
    (site / "app.py").write_text(
        APP + "\nimport os, threading\nthreading.Timer(0.3, lambda: os._exit(7)).start()\n"
    )
    args = ["--config", "palfrey.toml", "--workers", "2", "--workers-crash-limit", "3"]
    with PalfreyProcess(args, cwd=site) as proc:
        assert proc.wait(30) == 1
        assert "died with exit code 7" in proc.log
        assert "giving up" in proc.log


def test_startup_failure_exits_3(site: Path) -> None:
    (site / "app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', 'message': 'no db'})\n"
    )
    with PalfreyProcess(["--config", "palfrey.toml", "--workers", "2"], cwd=site) as proc:
        assert proc.wait(30) == 3
