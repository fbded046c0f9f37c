"""HTTP/1.1 benchmark: Palfrey against uvicorn (same stacks) and granian.

Run from the repository root with the project virtualenv::

    .venv/bin/python bench/http1.py --quick
    .venv/bin/python bench/http1.py --repeat 3 --json bench/results/http1.json

For every server configuration the harness:

1. starts the server on an explicit free port, pinned to one CPU with ``taskset``
   (single worker, access log off), serving ``bench/apps.py``;
2. waits (bounded) until ``GET /`` answers 200;
3. records the idle RSS, then the RSS while holding 1,000 idle keep-alive
   connections (each has completed one request);
4. for each scenario: checks the response is correct, runs a ``wrk`` warm-up,
   then the measured ``wrk`` run pinned to the other CPU, recording requests/s,
   latency percentiles (from a Lua ``done()`` hook), and the CPU time used by
   the server process tree and by ``wrk`` over the run.

With ``--repeat N`` the whole sequence is run N times, servers interleaved
round-robin (each round restarts every server) and the median of each metric
is reported. See bench/README.md and docs/explanation/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from procstat import CLK_TCK, cpu_seconds, free_port, process_tree

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LUA_DIR = BENCH_DIR / "lua"
HOST = "127.0.0.1"
APP_TARGET = "apps:app"

HELLO_BODY = b"Hello, world!"
ECHO_BODY_BYTES = 64 * 1024
STREAM_BYTES = 1024 * 1024
WANTED_NOFILE = 65536
STDERR_TAIL_LINES = 25
CLIENT_BOUND_PCT = 90  # wrk CPU% from which a row is flagged as load-generator bound
NOISY_PCT = 5  # CPU% used by other processes from which a row is flagged as noisy
PF_KTHREAD = 0x00200000
PR_SET_PDEATHSIG = 1
SERVER_ENV_PREFIXES = ("PALFREY_", "UVICORN_", "GRANIAN_", "WEB_CONCURRENCY")


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class ServerConfig:
    """One server binary plus the flags that select its stack."""

    key: str
    server: str
    stack: str
    flags: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.server} {self.stack}"

    def command(self, port: int) -> list[str]:
        base = ["--host", HOST, "--port", str(port), *self.flags]
        if self.server == "granian":
            return [*_granian_entry(), *base, APP_TARGET]
        if self.server == "uvicorn":
            return [sys.executable, "-m", "uvicorn", APP_TARGET, *base]
        return [*_palfrey_entry(), APP_TARGET, *base]

    def extra_pythonpath(self) -> list[str]:
        # The app module lives in bench/; palfrey may not be pip-installed yet,
        # so let it import from the working tree.
        paths = [str(BENCH_DIR)]
        if self.server == "palfrey":
            paths.append(str(REPO_ROOT))
        return paths


def _palfrey_entry() -> list[str]:
    script = Path(sys.executable).parent / "palfrey"
    if script.exists():
        return [str(script)]
    # Equivalent of the console script declared in pyproject.toml.
    return [sys.executable, "-c", "import sys; from palfrey.cli import main; sys.exit(main())"]


def _granian_entry() -> list[str]:
    script = Path(sys.executable).parent / "granian"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "granian"]


UVICORN_COMPAT_HTTPTOOLS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log")
UVICORN_COMPAT_H11 = ("--loop", "asyncio", "--http", "h11", "--no-access-log")
GRANIAN_FLAGS = (
    *("--interface", "asgi", "--loop", "uvloop", "--workers", "1"),
    *("--http", "1", "--no-access-log"),
)

CONFIGS: tuple[ServerConfig, ...] = (
    ServerConfig("palfrey-httptools", "palfrey", "httptools+uvloop", UVICORN_COMPAT_HTTPTOOLS),
    ServerConfig("uvicorn-httptools", "uvicorn", "httptools+uvloop", UVICORN_COMPAT_HTTPTOOLS),
    ServerConfig("palfrey-h11", "palfrey", "h11+asyncio", UVICORN_COMPAT_H11),
    ServerConfig("uvicorn-h11", "uvicorn", "h11+asyncio", UVICORN_COMPAT_H11),
    ServerConfig("granian", "granian", "asgi+uvloop", GRANIAN_FLAGS),
)

# palfrey config key -> uvicorn config key with the same stack
BASELINES = {"palfrey-httptools": "uvicorn-httptools", "palfrey-h11": "uvicorn-h11"}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    script: Path
    description: str
    check: Callable[[int], str | None]


def _check_hello(port: int) -> str | None:
    status, headers, body = http_request(port, "GET", "/")
    if status != 200 or body != HELLO_BODY:
        return f"GET / -> {status}, {body[:40]!r}"
    if headers.get("content-length") != str(len(HELLO_BODY)):
        return f"GET / content-length={headers.get('content-length')!r}"
    return None


def _check_echo(port: int) -> str | None:
    payload = os.urandom(ECHO_BODY_BYTES)
    status, _, body = http_request(port, "POST", "/echo", payload)
    if status != 200 or body != payload:
        return f"POST /echo -> {status}, {len(body)} bytes (identical={body == payload})"
    return None


def _check_stream(port: int) -> str | None:
    status, _, body = http_request(port, "GET", "/stream")
    if status != 200 or len(body) != STREAM_BYTES:
        return f"GET /stream -> {status}, {len(body)} bytes"
    return None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello", "/", LUA_DIR / "report.lua", "GET 13-byte body, keep-alive", _check_hello),
    Scenario("echo", "/echo", LUA_DIR / "echo.lua", "POST 64 KiB, echoed back", _check_echo),
    Scenario(
        "stream", "/stream", LUA_DIR / "report.lua", "GET 1 MiB in 64 KiB chunks", _check_stream
    ),
)


@dataclass
class Settings:
    duration: int
    warmup: int
    connections: int
    threads: int
    repeat: int
    idle_connections: int
    startup_timeout: float
    server_cpu: int
    client_cpu: int
    scenarios: list[str]
    configs: list[str]


# --------------------------------------------------------------------------- /proc helpers


def user_process_times() -> dict[int, float]:
    """utime + stime (seconds) of every user-space process.

    Children's times (cutime/cstime) are left out on purpose: a process reaping
    a long-lived child would add that child's whole lifetime to one run. So
    processes that both start and exit during a run are not counted; the
    figure is a lower bound.
    """
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[6]) & PF_KTHREAD:
                continue
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return times


def foreign_cpu_seconds(
    before: dict[int, float], after: dict[int, float], exclude: set[int]
) -> float:
    """CPU time used between two samples by processes outside ``exclude``."""
    return sum(
        max(0.0, seconds - before.get(pid, 0.0))
        for pid, seconds in after.items()
        if pid not in exclude
    )


def core_times() -> dict[int, list[int]]:
    """Per-CPU jiffy counters from /proc/stat."""
    cores: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit():
                cores[int(name[3:])] = [int(v) for v in rest.split()]
    return cores


def core_usage(
    before: dict[int, list[int]], after: dict[int, list[int]], cpu: int, prefix: str
) -> dict[str, float]:
    """Busy, softirq and steal percentages of one CPU between two samples.

    Busy counts everything but idle and iowait, so it includes softirq time
    (loopback TCP processing) that is not charged to any process, and any
    foreign load on the core.
    """
    if cpu not in before or cpu not in after:
        return {}
    delta = [a - b for a, b in zip(after[cpu], before[cpu], strict=False)]
    # user nice system idle iowait irq softirq steal guest guest_nice
    total = sum(delta[:8])
    if total <= 0:
        return {}
    idle = delta[3] + delta[4]
    return {
        f"{prefix}_busy_pct": round(100 * (total - idle) / total, 1),
        f"{prefix}_softirq_pct": round(100 * delta[6] / total, 1),
        f"{prefix}_steal_pct": round(100 * delta[7] / total, 1),
    }


def memory_kib(pid: int) -> dict[str, int]:
    """Summed RSS and PSS (KiB) of the process tree rooted at ``pid``."""
    rss = pss = 0
    members = process_tree(pid)
    for member in members:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                    break
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                    break
    return {"rss_kib": rss, "pss_kib": pss, "processes": len(members)}


# --------------------------------------------------------------------------- HTTP helpers


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        data = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, data
    finally:
        conn.close()


# --------------------------------------------------------------------------- server process


class ServerProcess:
    """A server started under ``taskset`` in its own session, output sent to a file."""

    live: set[ServerProcess] = set()

    def __init__(self, config: ServerConfig, settings: Settings) -> None:
        self.config = config
        self.port = free_port()
        self.argv = ["taskset", "-c", str(settings.server_cpu), *config.command(self.port)]
        # Closed in close(); a file (not a pipe) so a chatty server can never block.
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        # Ambient server settings would silently change what is measured.
        env = {k: v for k, v in os.environ.items() if not k.startswith(SERVER_ENV_PREFIXES)}
        pythonpath = config.extra_pythonpath()
        if env.get("PYTHONPATH"):
            pythonpath.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=BENCH_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_harness(),
        )
        ServerProcess.live.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float) -> str | None:
        """Wait until ``GET /`` returns 200. Returns an error message or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return f"exited with code {self.proc.returncode}"
            try:
                status, _, _ = http_request(self.port, "GET", "/", timeout=2.0)
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
                continue
            if status == 200:
                return None
            return f"GET / returned {status}"
        return f"not serving after {timeout:.0f}s"

    def output_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        self.log.seek(0, os.SEEK_END)
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (graceful), then SIGKILL the server's process group if it lingers."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # The leader is still alive, so its process group id is still ours.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=timeout)
        # Workers orphaned by a leader that exited (e.g. granian's) are still in its group.
        for member in _group_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
        ServerProcess.live.discard(self)

    def close(self) -> None:
        self.stop()
        self.log.close()


def _die_with_harness() -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child if the harness dies.

    Even a SIGKILLed harness then leaves no server or wrk behind (servers shut
    down gracefully on SIGTERM, including granian's worker processes).
    """
    harness = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != harness:  # the harness died before prctl took effect
            os._exit(1)

    return preexec


def _group_members(pgid: int) -> list[int]:
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                members.append(int(entry))
    return members


@atexit.register
def _stop_live_servers() -> None:
    for server in list(ServerProcess.live):
        server.stop(timeout=3.0)


# --------------------------------------------------------------------------- wrk


def run_wrk(
    settings: Settings, port: int, scenario: Scenario, duration: int, server_pid: int
) -> dict[str, Any]:
    """Run one pinned wrk and return its parsed result plus CPU accounting."""
    url = f"http://{HOST}:{port}{scenario.path}"
    argv = ["taskset", "-c", str(settings.client_cpu), "wrk", f"-t{settings.threads}"]
    argv += [f"-c{settings.connections}", f"-d{duration}s", "--timeout", "5s", "--latency"]
    argv += ["-s", str(scenario.script), url]
    env = os.environ.copy()
    env["BENCH_BODY_BYTES"] = str(ECHO_BODY_BYTES)
    with tempfile.TemporaryFile() as out:
        others_before = user_process_times()
        cores_before = core_times()
        server_cpu_before = cpu_seconds(server_pid)
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_harness(),
        )
        status, usage, timed_out = _wait_with_rusage(proc, started + duration, 30.0)
        wall = time.monotonic() - started
        server_cpu_after = cpu_seconds(server_pid)
        cores_after = core_times()
        others_after = user_process_times()
        ours = {os.getpid(), proc.pid, *process_tree(server_pid)}
        other_cpu = foreign_cpu_seconds(others_before, others_after, ours)
        out.seek(0)
        output = out.read().decode(errors="replace")
    result: dict[str, Any] = {
        "command": argv,
        "exit_code": status,
        "wall_s": round(wall, 3),
        "server_cpu_s": round(server_cpu_after - server_cpu_before, 2),
        "server_cpu_pct": round(100 * (server_cpu_after - server_cpu_before) / wall, 1),
        "wrk_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wrk_cpu_pct": round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1),
        "other_cpu_pct": round(100 * other_cpu / wall, 1),
        **core_usage(cores_before, cores_after, settings.server_cpu, "server_core"),
        **core_usage(cores_before, cores_after, settings.client_cpu, "client_core"),
        "output": output,
    }
    marker = next((line for line in output.splitlines() if line.startswith("BENCH_RESULT ")), None)
    if timed_out:
        result["error"] = "wrk did not finish in time and was killed"
    elif status != 0 or marker is None:
        result["error"] = f"wrk exit code {status}: " + " | ".join(output.strip().splitlines()[-3:])
    if marker is None:
        return result
    raw = json.loads(marker.removeprefix("BENCH_RESULT "))
    seconds = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    result.update(
        {
            "requests": raw["requests"],
            "errors": raw["errors"],
            "error_count": sum(raw["errors"].values()),
            "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
            "mib_per_s": round(raw["bytes"] / seconds / 2**20, 1) if seconds else 0.0,
            "p50_ms": latency["p50"] / 1000,
            "p90_ms": latency["p90"] / 1000,
            "p99_ms": latency["p99"] / 1000,
            "p99_9_ms": latency["p99_9"] / 1000,
            "max_ms": latency["max"] / 1000,
            "mean_ms": round(latency["mean"] / 1000, 3),
            # Server CPU time per request: still meaningful when wrk is the bottleneck.
            "server_us_per_req": (
                round(result["server_cpu_s"] * 1e6 / raw["requests"], 1) if raw["requests"] else 0.0
            ),
        }
    )
    if raw["requests"] == 0:
        result.setdefault("error", "no requests completed")
    return result


def _wait_with_rusage(
    proc: subprocess.Popen[bytes], expected_end: float, grace: float
) -> tuple[int, resource.struct_rusage, bool]:
    """Reap ``proc`` with wait4 (to get its exact CPU usage).

    Polls rarely until ``expected_end`` (the harness shares wrk's CPU), then
    often; kills wrk if it is still running ``grace`` seconds after that.
    """
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now > expected_end + grace and not timed_out:
                timed_out = True
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.1 if now < expected_end - 0.3 else 0.005)
    except BaseException:  # interrupted: do not leave wrk running
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, timed_out


# --------------------------------------------------------------------------- idle connections


async def _open_keepalive(
    port: int, request: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if " 200 " not in f"{lines[0]} ":
        raise RuntimeError(f"unexpected status line {lines[0]!r}")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return reader, writer


async def _hold_idle_connections(
    port: int, count: int, sample: Callable[[], dict[str, int]]
) -> dict[str, Any]:
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    semaphore = asyncio.Semaphore(100)

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with semaphore:
            return await asyncio.wait_for(_open_keepalive(port, request), timeout=20)

    started = time.monotonic()
    outcomes = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [item for item in outcomes if not isinstance(item, BaseException)]
    failures = [item for item in outcomes if isinstance(item, BaseException)]
    open_seconds = time.monotonic() - started
    # Short settle, well inside uvicorn's default 5 s keep-alive timeout.
    await asyncio.sleep(0.5)
    memory = sample()
    await asyncio.sleep(0)
    held = sum(1 for reader, writer in opened if not reader.at_eof() and not writer.is_closing())
    for _, writer in opened:
        writer.close()
    for _, writer in opened:
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    result: dict[str, Any] = {
        **memory,
        "requested": count,
        "opened": len(opened),
        "held_at_sample": held,
        "open_seconds": round(open_seconds, 2),
    }
    if failures:
        result["first_failure"] = repr(failures[0])
    return result


def measure_idle_connections(server: ServerProcess, count: int) -> dict[str, Any]:
    coro = _hold_idle_connections(server.port, count, lambda: memory_kib(server.pid))
    return asyncio.run(asyncio.wait_for(coro, timeout=90))


# --------------------------------------------------------------------------- one round


def run_config(
    config: ServerConfig, settings: Settings, log: Callable[[str], None]
) -> dict[str, Any]:
    """Start one server, measure memory and every scenario, stop it."""
    record: dict[str, Any] = {"status": "ok", "scenarios": {}}
    server = ServerProcess(config, settings)
    record["command"] = server.argv
    try:
        error = server.wait_ready(settings.startup_timeout)
        if error is not None:
            record.update(status="failed to start", error=error, stderr_tail=server.output_tail())
            log(f"  {config.label}: failed to start ({error})")
            return record
        time.sleep(0.5)
        record["idle"] = memory_kib(server.pid)
        if settings.idle_connections:
            try:
                idle = measure_idle_connections(server, settings.idle_connections)
            except (OSError, asyncio.TimeoutError) as exc:
                log(f"  {config.label}: idle-connection test failed: {exc!r}")
            else:
                record["idle_connections"] = idle
                log(
                    f"  {config.label}: RSS idle {record['idle']['rss_kib'] / 1024:.1f} MiB, "
                    f"with {idle['held_at_sample']}/{idle['requested']} idle connections "
                    f"{idle['rss_kib'] / 1024:.1f} MiB"
                )
        for scenario in SCENARIOS:
            if scenario.name not in settings.scenarios:
                continue
            if not server.alive():
                record.update(status="server died", stderr_tail=server.output_tail())
                break
            try:
                check_error = scenario.check(server.port)
            except (OSError, http.client.HTTPException) as exc:
                check_error = repr(exc)
            if check_error is not None:
                record["scenarios"][scenario.name] = {"error": f"invalid response: {check_error}"}
                log(f"  {config.label} {scenario.name}: invalid response ({check_error})")
                continue
            warmup_rps = None
            if settings.warmup:
                warmup = run_wrk(settings, server.port, scenario, settings.warmup, server.pid)
                warmup_rps = warmup.get("rps")
            measured = run_wrk(settings, server.port, scenario, settings.duration, server.pid)
            measured["warmup_rps"] = warmup_rps
            record["scenarios"][scenario.name] = measured
            log(
                f"  {config.label} {scenario.name}: {measured.get('rps', 0):,.0f} req/s, "
                f"p99 {measured.get('p99_ms', 0):.2f} ms, server CPU "
                f"{measured['server_cpu_pct']:.0f}%, wrk CPU {measured['wrk_cpu_pct']:.0f}%, "
                f"other processes {measured['other_cpu_pct']:.0f}%"
                + (f"  [{measured['error']}]" if "error" in measured else "")
            )
        if server.alive():
            record["after_load"] = memory_kib(server.pid)
        else:
            record.update(status="server died", stderr_tail=server.output_tail())
    except Exception as exc:  # keep going with the other servers
        record.update(status="harness error", error=repr(exc), stderr_tail=server.output_tail())
        log(f"  {config.label}: harness error {exc!r}")
    finally:
        server.close()
    return record


# --------------------------------------------------------------------------- aggregation

NUMERIC_KEYS = (
    "rps",
    "mib_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p99_9_ms",
    "max_ms",
    "mean_ms",
    "server_cpu_pct",
    "wrk_cpu_pct",
    "server_us_per_req",
    "other_cpu_pct",
    "server_core_busy_pct",
    "server_core_softirq_pct",
    "server_core_steal_pct",
    "client_core_busy_pct",
    "client_core_softirq_pct",
    "client_core_steal_pct",
    "error_count",
)
MEMORY_KEYS = ("rss_kib", "pss_kib")


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def aggregate(config: ServerConfig, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every metric over the rounds that succeeded."""
    summary: dict[str, Any] = {
        "label": config.label,
        "server": config.server,
        "stack": config.stack,
        "command": rounds[0].get("command"),
        "rounds": rounds,
    }
    ok_rounds = [r for r in rounds if r["status"] == "ok"]
    bad = next((r for r in rounds if r["status"] != "ok"), None)
    summary["status"] = "ok" if not bad else bad["status"]
    if bad is not None:
        summary["error"] = bad.get("error")
        summary["stderr_tail"] = bad.get("stderr_tail", "")
    summary["memory"] = {}
    for section in ("idle", "idle_connections", "after_load"):
        samples = [r[section] for r in ok_rounds if section in r]
        if samples:
            summary["memory"][section] = {
                key: _median([s[key] for s in samples]) for key in MEMORY_KEYS
            }
            if section == "idle_connections":
                summary["memory"][section]["held_at_sample"] = min(
                    s["held_at_sample"] for s in samples
                )
    summary["scenarios"] = {}
    for name in (s.name for s in SCENARIOS):
        if not any(name in r["scenarios"] for r in rounds):
            continue
        runs = [r["scenarios"][name] for r in rounds if name in r["scenarios"]]
        good = [run for run in runs if "rps" in run and "error" not in run]
        if not good:
            summary["scenarios"][name] = {"error": runs[0].get("error", "no result")}
            continue
        entry: dict[str, Any] = {
            key: _median([run[key] for run in good if key in run])
            for key in NUMERIC_KEYS
            if any(key in run for run in good)
        }
        entry["runs"] = len(good)
        if len(good) < len(runs):
            entry["failed_runs"] = len(runs) - len(good)
        summary["scenarios"][name] = entry
    return summary


def comparisons(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for palfrey_key, uvicorn_key in BASELINES.items():
        ours, theirs = results.get(palfrey_key), results.get(uvicorn_key)
        if not ours or not theirs:
            continue
        for name, mine in ours["scenarios"].items():
            base = theirs["scenarios"].get(name, {})
            if "rps" not in mine or "rps" not in base or not base["rps"] or not base["p99_ms"]:
                continue
            rows.append(
                {
                    "scenario": name,
                    "palfrey": palfrey_key,
                    "uvicorn": uvicorn_key,
                    "rps_ratio": round(mine["rps"] / base["rps"], 3),
                    "p99_ratio": round(mine["p99_ms"] / base["p99_ms"], 3),
                    "cpu_per_req_ratio": (
                        round(mine["server_us_per_req"] / base["server_us_per_req"], 3)
                        if base["server_us_per_req"]
                        else None
                    ),
                }
            )
    return rows


# --------------------------------------------------------------------------- output


def _fmt_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table; the first two columns are left-aligned, the rest right-aligned.

    A row with fewer cells than headers ends with a free-text note (e.g. "failed to
    start") that spans the remaining columns and does not widen them.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) == len(headers):
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        else:
            for i, cell in enumerate(row[:-1]):
                widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        if len(cells) < len(headers):
            return "  ".join([*(c.ljust(widths[i]) for i, c in enumerate(cells[:-1])), cells[-1]])
        return "  ".join(
            cell.rjust(widths[i]) if i >= 2 else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _mib(section: dict[str, float] | None, name: str) -> str:
    return f"{section[name] / 1024:.1f}" if section else "-"


def render(results: dict[str, dict[str, Any]], settings: Settings) -> str:
    ratio_by = {(c["scenario"], c["palfrey"]): c for c in comparisons(results)}
    cpu0, cpu1 = f"cpu{settings.server_cpu}%", f"cpu{settings.client_cpu}%"
    headers = ["server", "stack", "req/s", "p50 ms", "p99 ms", "srv%", cpu0, "wrk%", cpu1]
    headers += ["other%", "us/req", "rps/uv", "p99/uv", "us/uv"]
    out: list[str] = []
    notes: list[str] = []
    for scenario in SCENARIOS:
        if scenario.name not in settings.scenarios:
            continue
        rows: list[list[str]] = []
        for key in settings.configs:
            summary = results[key]
            prefix = [summary["server"], summary["stack"]]
            entry = summary["scenarios"].get(scenario.name)
            if summary["status"] == "failed to start":
                rows.append([*prefix, "failed to start"])
                continue
            if entry is None or "rps" not in entry:
                reason = entry["error"] if entry else summary["status"]
                rows.append([*prefix, f"ERROR: {reason}"])
                continue
            ratio = ratio_by.get((scenario.name, key)) or {}
            client_busy = max(entry["wrk_cpu_pct"], entry.get("client_core_busy_pct", 0.0))
            flags = "*" if client_busy >= CLIENT_BOUND_PCT else ""
            if entry.get("other_cpu_pct", 0.0) >= NOISY_PCT:
                flags += "!"
            if entry["error_count"]:
                flags += "E"
                notes.append(
                    f"E {scenario.name} {summary['label']}: median {entry['error_count']:.0f} "
                    "wrk errors per run (see --json for the breakdown)"
                )
            rows.append(
                [
                    *prefix,
                    f"{entry['rps']:,.0f}{flags:<3}",
                    f"{entry['p50_ms']:.2f}",
                    f"{entry['p99_ms']:.2f}",
                    f"{entry['server_cpu_pct']:.0f}",
                    _pct(entry.get("server_core_busy_pct")),
                    f"{entry['wrk_cpu_pct']:.0f}",
                    _pct(entry.get("client_core_busy_pct")),
                    _pct(entry.get("other_cpu_pct")),
                    f"{entry['server_us_per_req']:.1f}",
                    _ratio(ratio.get("rps_ratio")),
                    _ratio(ratio.get("p99_ratio")),
                    _ratio(ratio.get("cpu_per_req_ratio")),
                ]
            )
        out += [f"{scenario.name}: {scenario.description}", _fmt_table(headers, rows), ""]
    out += notes

    conns_label = f"@{settings.idle_connections} conns"
    mem_headers = ["server", "stack", "idle RSS", f"RSS {conns_label}", "KiB/conn", "held"]
    mem_headers += ["idle PSS", f"PSS {conns_label}", "RSS after load"]
    mem_rows: list[list[str]] = []
    for key in settings.configs:
        summary = results[key]
        memory = summary["memory"]
        prefix = [summary["server"], summary["stack"]]
        if summary["status"] == "failed to start":
            mem_rows.append([*prefix, "failed to start"])
            continue
        idle = memory.get("idle")
        conns = memory.get("idle_connections")
        after = memory.get("after_load")

        per_conn = (
            f"{(conns['rss_kib'] - idle['rss_kib']) / settings.idle_connections:.1f}"
            if idle and conns and settings.idle_connections
            else "-"
        )
        mem_rows.append(
            [
                *prefix,
                _mib(idle, "rss_kib"),
                _mib(conns, "rss_kib"),
                per_conn,
                f"{conns['held_at_sample']:.0f}" if conns else "-",
                _mib(idle, "pss_kib"),
                _mib(conns, "pss_kib"),
                _mib(after, "rss_kib"),
            ]
        )
    out += ["memory, MiB (summed over the server's process tree; KiB/conn from RSS)"]
    out += [_fmt_table(mem_headers, mem_rows)]

    failed = [results[k] for k in settings.configs if results[k]["status"] != "ok"]
    for summary in failed:
        out += [
            "",
            f"{summary['label']}: {summary['status']}: {summary.get('error') or ''}".rstrip(),
        ]
        tail = summary.get("stderr_tail")
        if tail:
            out += ["  | " + line for line in tail.splitlines()]
    out += [
        "",
        f"Server pinned to CPU {settings.server_cpu}, wrk to CPU {settings.client_cpu}. "
        "srv%, wrk% = CPU time of the server (process tree), of wrk,",
        f"  in % of one core; {cpu0}, {cpu1} = how busy each whole CPU was (includes softirq "
        "network work);",
        "  other% = CPU used by any other process during the run; us/req = server CPU "
        "microseconds per request.",
        f"  * wrk's CPU was >= {CLIENT_BOUND_PCT}% busy: the load generator limited req/s, "
        "compare us/req instead;",
        f"  ! other processes used >= {NOISY_PCT}% CPU: noisy, rerun on a quiet machine.",
        "rps/uv, p99/uv, us/uv = palfrey / uvicorn on the same stack: req/s (>1 is better), "
        "p99 and us/req (<1 is better).",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- environment


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _command_output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if done.returncode in (0, 1) and text else None


def environment() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    governor = None
    with contextlib.suppress(OSError):
        governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    git_rev = _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_governor": governor,
        "loadavg_at_start": os.getloadavg(),
        "wrk": _command_output(["wrk", "-v"]),
        "git_revision": git_rev if git_rev and " " not in git_rev else None,
        "versions": {
            name: _version(name)
            for name in ("palfrey", "uvicorn", "granian", "uvloop", "httptools", "h11")
        },
    }


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=int, help="seconds per measured wrk run (default 10, quick 3)"
    )
    parser.add_argument(
        "--warmup", type=int, help="seconds of wrk warm-up per scenario (default 3, quick 1)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (default 1: wrk has one CPU)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; the median is reported (default 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs for a smoke test (< 2 minutes)"
    )
    parser.add_argument(
        "--servers",
        default="palfrey,uvicorn,granian",
        help="comma-separated servers to run (palfrey, uvicorn, granian)",
    )
    parser.add_argument(
        "--stacks",
        default="httptools,h11",
        help="comma-separated palfrey/uvicorn stacks (httptools, h11); granian always uses its own",
    )
    parser.add_argument(
        "--scenarios", default=",".join(s.name for s in SCENARIOS), help="comma-separated scenarios"
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=1000,
        help="keep-alive connections held for the RSS sample (0: skip)",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=20.0, help="seconds to wait for a server"
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    parser.add_argument(
        "--client-cpu", type=int, default=1, help="CPU wrk (and the harness) is pinned to"
    )
    parser.add_argument(
        "--json", type=Path, help="write full results (including raw wrk output) here"
    )
    args = parser.parse_args(argv)

    servers = {s.strip() for s in args.servers.split(",") if s.strip()}
    stacks = {s.strip() for s in args.stacks.split(",") if s.strip()}
    unknown = servers - {c.server for c in CONFIGS}
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad_scenarios = set(scenarios) - {s.name for s in SCENARIOS}
    if bad_scenarios:
        parser.error(f"unknown scenario(s): {', '.join(sorted(bad_scenarios))}")
    configs = [
        c.key
        for c in CONFIGS
        if c.server in servers and (c.server == "granian" or c.key.split("-", 1)[1] in stacks)
    ]
    if not configs:
        parser.error("no server configuration selected")
    if args.repeat < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--repeat, --connections and --threads must be >= 1")
    settings = Settings(
        duration=args.duration if args.duration is not None else (3 if args.quick else 10),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
        connections=args.connections,
        threads=args.threads,
        repeat=args.repeat,
        idle_connections=args.idle_connections,
        startup_timeout=args.startup_timeout,
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        scenarios=scenarios,
        configs=configs,
    )
    if settings.duration < 1 or settings.warmup < 0:
        parser.error("--duration must be >= 1 and --warmup >= 0")
    return settings, args


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(
                f"error: {tool!r} not found on PATH (apt-get install wrk util-linux)",
                file=sys.stderr,
            )
            return 2
    available = os.sched_getaffinity(0)
    if {
        settings.server_cpu,
        settings.client_cpu,
    } - available or settings.server_cpu == settings.client_cpu:
        print(
            f"error: need two distinct CPUs (server {settings.server_cpu}, client "
            f"{settings.client_cpu}); available: {sorted(available)}",
            file=sys.stderr,
        )
        return 2
    nofile = raise_nofile_limit()
    if nofile < settings.idle_connections + 256:
        print(
            f"warning: RLIMIT_NOFILE is {nofile}; the idle-connection test may fail",
            file=sys.stderr,
        )
    # The harness (idle-connection client) shares the load generator's CPU, never the server's.
    os.sched_setaffinity(0, {settings.client_cpu})

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    env = environment()
    runs = settings.repeat * len(settings.configs)
    estimate = runs * (len(settings.scenarios) * (settings.warmup + settings.duration + 1) + 5)
    log(
        f"http1 bench: {len(settings.configs)} server config(s) x {len(settings.scenarios)} "
        f"scenario(s) x {settings.repeat} round(s), {settings.connections} connections, "
        f"{settings.warmup}s warm-up + {settings.duration}s per run (~{estimate}s)"
    )
    configs = {c.key: c for c in CONFIGS}
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in settings.configs}
    started = time.monotonic()
    with _sigterm_as_interrupt():
        try:
            for index in range(settings.repeat):
                log(f"round {index + 1}/{settings.repeat}")
                for key in settings.configs:
                    rounds[key].append(run_config(configs[key], settings, log))
        except KeyboardInterrupt:
            log("interrupted; reporting what was measured")
            _stop_live_servers()
            if not any(rounds.values()):
                return 130
    results = {key: aggregate(configs[key], runs) for key, runs in rounds.items() if runs}
    settings.configs = [key for key in settings.configs if key in results]
    elapsed = time.monotonic() - started

    # The record first, so a closed stdout (e.g. piping into head) cannot lose it.
    if args.json is not None:
        document = {
            "benchmark": "http1",
            "environment": env,
            "settings": asdict(settings),
            "elapsed_s": round(elapsed, 1),
            "results": results,
            "comparisons": comparisons(results),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {args.json}")
    try:
        print(render(results, settings))
        print(f"\n(total {elapsed:.0f}s; {settings.repeat} round(s), medians shown)", flush=True)
    except BrokenPipeError:
        # Silence the interpreter's own complaint when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
