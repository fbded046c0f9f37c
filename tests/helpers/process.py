"""Palfrey (or gunicorn) as a subprocess for black-box tests with real signals.

    with PalfreyProcess(["app:app", "--workers", "2"], cwd=tmp_path) as proc:
        proc.wait_for_port()
        httpx.get(proc.url + "/")
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("Reload complete")

The log (stderr and stdout, merged) is read by a thread; every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
_PORT = re.compile(r"running on https?://[^\s:]+:(\d+)|Listening at: https?://[^\s:]+:(\d+)")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PALFREY_", "UVICORN_", "GUNICORN_"))
        and k not in ("WEB_CONCURRENCY", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


class PalfreyProcess:
    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        program: str = "palfrey",
    ) -> None:
        self.command = [str(BIN / program), *args]
        self.cwd = cwd
        self.env = clean_env(env)
        self.lines: list[str] = []
        self._lock = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None

    def __enter__(self) -> PalfreyProcess:
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            with_suppress_kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # Workers are in the process group (start_new_session): leave none behind.
        with_suppress_kill(-self.proc.pid, signal.SIGKILL)

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                self._lock.notify_all()

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def count(self, text: str) -> int:
        with self._lock:
            return sum(text in line for line in self.lines)

    def wait_for_log(self, text: str, *, count: int = 1, timeout: float = 15.0) -> None:
        self.wait_for_lines(
            lambda line: text in line, count=count, timeout=timeout, what=repr(text)
        )

    def wait_for_lines(
        self,
        select: Callable[[str], bool],
        *,
        count: int = 1,
        timeout: float = 15.0,
        what: str = "matching lines",
    ) -> list[str]:
        """The output lines `select` accepts, once there are at least `count` of them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [line for line in self.lines if select(line)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log = self.log_unlocked()
                    raise AssertionError(f"{what} x{count} not logged in {timeout}s:\n{log}")
                self._lock.wait(min(remaining, 0.2))

    def log_unlocked(self) -> str:
        return "\n".join(self.lines)

    def wait_for_port(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.lines:
                    match = _PORT.search(line)
                    if match:
                        self.port = int(match.group(1) or match.group(2))
                        break
            if self.port is not None:
                return self.port
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no port logged:\n{self.log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_serving(self, path: str = "/", timeout: float = 15.0) -> httpx.Response:
        self.wait_for_port(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return httpx.get(self.url + path, timeout=5)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


def with_suppress_kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
