"""`gunicorn main:app -k palfrey.workers.PalfreyWorker`: serves with gunicorn's settings
and shuts down gracefully."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.process import PalfreyProcess

pytest.importorskip("gunicorn")
pytestmark = pytest.mark.timeout(60)

APP = """
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
"""


@pytest.mark.parametrize("worker", ["PalfreyWorker", "PalfreyH11Worker"])
def test_gunicorn_worker_serves_and_shuts_down_gracefully(tmp_path: Path, worker: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    args = [
        "app:app", "-k", f"palfrey.workers.{worker}", "-w", "2", "-b", "127.0.0.1:0",
        "--graceful-timeout", "10", "--keep-alive", "7", "--max-requests", "1000",
        "--access-logfile", "-", "--no-control-socket",
    ]  # fmt: skip
    env = {"PALFREY_SERVER__HEADERS": '["X-From-Env: yes"]', "PALFREY_LIFESPAN": "off"}
    with PalfreyProcess(args, cwd=tmp_path, env=env, program="gunicorn") as proc:
        response = proc.wait_until_serving()
        assert response.status_code == 200
        assert response.headers["x-from-env"] == "yes"  # Palfrey settings from PALFREY_*
        proc.wait_for_log("Booting worker", count=2)
        proc.wait_for_log('"GET / HTTP/1.1" 200')  # gunicorn's --access-logfile
        results: list[int] = []
        slow = threading.Thread(
            target=lambda: results.append(httpx.get(proc.url + "/slow", timeout=10).status_code)
        )
        slow.start()
        time.sleep(0.3)
        proc.signal(signal.SIGTERM)
        slow.join(15)
        assert results == [200]
        assert proc.wait(20) == 0
        assert "Shutting down: Master" in proc.log


def test_gunicorn_worker_refuses_what_it_cannot_honour(tmp_path: Path) -> None:
    """metrics.enabled would make every worker open the metrics listener: refused."""
    (tmp_path / "app.py").write_text(APP)
    args = ["app:app", "-k", "palfrey.workers.PalfreyWorker", "-w", "1", "-b", "127.0.0.1:0"]
    env = {"PALFREY_METRICS__ENABLED": "true", "PALFREY_LIFESPAN": "off"}
    with PalfreyProcess(args, cwd=tmp_path, env=env, program="gunicorn") as proc:
        proc.wait_for_log("metrics.enabled: under gunicorn")
        assert proc.wait(30) != 0
