"""HTTP/2 benchmark: Palfrey against hypercorn, uvicorn's zttp HTTP/2 and granian (Rust, the
stretch reference) with h2load, in one run, on the same app (`bench/apps.py`).

    .venv/bin/python bench/http2.py                      # every scenario, 10 s each
    .venv/bin/python bench/http2.py --duration 5 --scenarios h2c --json out.json
    .venv/bin/python bench/http2.py --zttp-python /tmp/zttp/bin/python

Each server is pinned to one CPU (`taskset -c 0`), h2load to another (`taskset -c 1`).
Scenarios: `h2c` (GET / hello, prior knowledge, 16 connections x 10 concurrent streams),
`tls` (the same over TLS, ALPN h2), `echo` (a 64 KiB POST to /echo over h2c, echoed
back) and `h1` (Palfrey's own HTTP/1.1 hello on httptools, driven by wrk with 64
connections as in `http1.py`: the reference the HTTP/2 figures are held against).
HTTP/2 latency percentiles come from h2load's per-request log (`--log-file`), so p50/p99
are exact, not h2load's mean/sd summary; wrk's come from `bench/lua/report.lua`. Servers
alternate within each round; `--repeat N` takes the median of N rounds.

uvicorn's zttp backend needs the `zttp` package, which does not install beside the
project's pins: put it in a venv of its own (`python3 -m venv /tmp/zttp && /tmp/zttp/bin/pip
install uvicorn==0.54.0 zttp uvloop`) and pass `--zttp-python /tmp/zttp/bin/python`.

The primary figure is the server's CPU time per request (`cpu_us`): utime + stime of
the server's whole process tree (hypercorn runs its worker as a child) from
`/proc/<pid>/stat`, read just before and after the measured h2load run, divided by the
requests that succeeded. It holds up on a shared machine where req/s moves with the
neighbours. A separate h2load run of `--warmup` seconds precedes each measured run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procstat import cpu_seconds, free_port
from tls import make_certificate

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Result:
    server: str
    scenario: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    succeeded: int = 0
    failed: int = 0
    cpu_us: float = 0.0  # server CPU microseconds per request
    cpu_pct: float = 0.0  # server CPU time / wall time of the measured run
    client_cpu_pct: float = 0.0  # h2load's CPU time / wall time
    error: str = ""
    raw: str = field(default="", repr=False)


def make_cert(folder: Path) -> tuple[Path, Path]:
    """tls.py's trustme certificate for 127.0.0.1 (key in PKCS#8, which granian needs)."""
    _, certfile, keyfile = make_certificate(folder)
    return certfile, keyfile


ZTTP_PYTHON = [PYTHON]  # set by --zttp-python


def zttp_available() -> bool:
    probe = [ZTTP_PYTHON[0], "-c", "import zttp, uvicorn.protocols.http.zttp_h2_impl"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def command(
    server: str, port: int, tls: tuple[Path, Path] | None, http1: bool = False
) -> list[str]:
    cert = [] if tls is None else [str(tls[0]), str(tls[1])]
    if server == "palfrey" or server.startswith("palfrey@"):
        argv = [PYTHON, "-m", "palfrey", "apps:app", "--port", str(port)]
        argv += ["--http", "httptools" if http1 else "h2"]
        argv += ["--no-access-log", "--log-level", "warning", "--lifespan", "off"]
        if cert:
            argv += ["--ssl-certfile", cert[0], "--ssl-keyfile", cert[1]]
        return argv
    if server == "hypercorn":
        argv = [PYTHON, "-m", "hypercorn", "apps:app", "--bind", f"127.0.0.1:{port}"]
        argv += ["--log-level", "warning", "-k", "uvloop"]
        if cert:
            argv += ["--certfile", cert[0], "--keyfile", cert[1]]
        return argv
    if server == "uvicorn-zttp":
        argv = [ZTTP_PYTHON[0], "-m", "uvicorn", "apps:app", "--port", str(port)]
        argv += ["--http", "zttp"]
        argv += ["--http2", "--no-access-log", "--log-level", "warning", "--lifespan", "off"]
        if cert:
            argv += ["--ssl-certfile", cert[0], "--ssl-keyfile", cert[1]]
        return argv
    if server == "granian":
        # HTTP/2 only: prior knowledge over h2c, ALPN h2 over TLS.
        script = Path(PYTHON).parent / "granian"
        argv = [str(script)] if script.exists() else [PYTHON, "-m", "granian"]
        argv += ["--interface", "asgi", "--loop", "uvloop", "--workers", "1"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--http", "2"]
        argv += ["--no-access-log", "--log-level", "warning"]
        if cert:
            argv += ["--ssl-certificate", cert[0], "--ssl-keyfile", cert[1]]
        return [*argv, "apps:app"]
    raise ValueError(server)


def start(
    server: str, port: int, tls: tuple[Path, Path] | None, cpu: int, http1: bool = False
) -> subprocess.Popen[bytes]:
    argv = ["taskset", "-c", str(cpu), *command(server, port, tls, http1)]
    extra = os.environ.get("PYTHONPATH", "")
    # `palfrey@DIR`: Palfrey imported from another checkout (A/B runs in one invocation).
    tree = server.partition("@")[2] or str(ROOT)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'bench'}:{tree}:{extra}".rstrip(":")}
    # The server's stderr goes to a file, never an undrained pipe: once 64 KiB of log
    # (e.g. tracebacks of requests the client abandoned at the end of an h2load run) fill
    # a pipe, the server's next write blocks its event loop and it stops accepting.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            argv,
            cwd=ROOT / "bench",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        return _wait_listening(server, process, port, log)


def _wait_listening(
    server: str, process: subprocess.Popen[bytes], port: int, log: Any
) -> subprocess.Popen[bytes]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read().decode(errors="replace"))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{server} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def h2load(
    url: str,
    *,
    duration: float,
    clients: int,
    streams: int,
    cpu: int,
    log: Path | None,
    extra: tuple[str, ...] = (),
) -> tuple[str, list[float], float]:
    """h2load's output, the request latencies (ms) and h2load's CPU seconds."""
    argv = [
        "taskset",
        "-c",
        str(cpu),
        "h2load",
        "-c",
        str(clients),
        "-m",
        str(streams),
        "-t",
        "1",
        "-D",
        str(max(1, round(duration))),
        # A connection that stalls is dropped (its requests count as failed) rather
        # than holding h2load, which waits for every request in flight, forever.
        "--connection-inactivity-timeout",
        "10",
        *([] if log is None else ["--log-file", str(log)]),
        *extra,
        url,
    ]
    before = _children_cpu()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout or b""
        text = output.decode() if isinstance(output, bytes) else output
        return f"{text}\nh2load did not finish: the server stalled", [], 0.0
    client_cpu = _children_cpu() - before
    latencies = []
    if log is not None and log.exists():
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):  # failed requests log -1
                latencies.append(int(parts[2]) / 1000.0)  # µs -> ms
        log.unlink()
    return done.stdout + done.stderr, latencies, client_cpu


def wrk(
    url: str, *, duration: float, cpu: int, log: Path | None, **_: Any
) -> tuple[str, list[float], float]:
    """wrk with 64 connections and bench/lua/report.lua: output, no latency list (the
    report line holds the percentiles), wrk's CPU seconds."""
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", "-c64", f"-d{max(1, round(duration))}s"]
    argv += ["--timeout", "5s", "--latency", "-s", str(ROOT / "bench/lua/report.lua"), url]
    before = _children_cpu()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    return done.stdout + done.stderr, [], _children_cpu() - before


def parse_wrk(server: str, scenario: str, output: str, latencies: list[float]) -> Result:
    result = Result(server, scenario, raw=output)
    line = next((x for x in output.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        result.error = output[-500:]
        return result
    report = json.loads(line.partition(" ")[2])
    errors = report["errors"]
    result.failed = sum(errors.values())
    result.succeeded = report["requests"] - errors["status"]
    result.rps = report["requests"] * 1e6 / report["duration_us"]
    result.p50_ms = report["latency_us"]["p50"] / 1000
    result.p99_ms = report["latency_us"]["p99"] / 1000
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse(server: str, scenario: str, output: str, latencies: list[float]) -> Result:
    result = Result(server, scenario, raw=output)
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("finished in"):
            result.rps = float(line.split(",")[1].split()[0])
        elif line.startswith("requests:"):
            words = line.replace(",", "").split()
            result.succeeded = int(words[words.index("succeeded") - 1])
            result.failed = int(words[words.index("failed") - 1])
    if latencies:
        ordered = sorted(latencies)
        result.p50_ms = ordered[len(ordered) // 2]
        result.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    if not result.rps:
        result.error = output[-500:]
    return result


SCENARIOS = ("h2c", "tls", "echo", "h1")


def run_round(
    args: argparse.Namespace, servers: list[str], tls: tuple[Path, Path], tmp: Path
) -> list[Result]:
    results = []
    for scenario in args.scenarios:
        for server in servers:
            if scenario == "h1" and not server.startswith("palfrey"):
                continue  # the HTTP/1.1 reference is Palfrey's own
            results.append(run_one(args, server, scenario, tls, tmp))
    return results


def run_one(
    args: argparse.Namespace, server: str, scenario: str, tls: tuple[Path, Path], tmp: Path
) -> Result:
    port = free_port()
    http1 = scenario == "h1"
    try:
        process = start(
            server, port, tls if scenario == "tls" else None, args.server_cpu, http1=http1
        )
    except RuntimeError as exc:
        return Result(server, scenario, error=str(exc)[-500:])
    scheme = "https" if scenario == "tls" else "http"
    url = f"{scheme}://127.0.0.1:{port}/"
    shape: dict[str, Any] = {"clients": args.clients, "streams": args.streams}
    shape["cpu"] = args.client_cpu
    if scenario == "echo":
        url += "echo"
        shape["extra"] = ("-d", str(tmp / "body.bin"))
    load = wrk if http1 else h2load
    try:
        if args.warmup > 0:
            load(url, duration=args.warmup, log=None, **shape)
        cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
        output, latencies, client_cpu = load(
            url,
            duration=args.duration,
            log=tmp / f"{server.replace('/', '_')}-{scenario}.log",
            **shape,
        )
        cpu = cpu_seconds(process.pid) - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        stop(process)
    result = (parse_wrk if http1 else parse)(server, scenario, output, latencies)
    if result.succeeded:
        result.cpu_us = cpu * 1e6 / result.succeeded
        result.cpu_pct = 100 * cpu / wall
        result.client_cpu_pct = 100 * client_cpu / wall
    print(
        f"  {scenario:4} {server:13} {result.rps:10.0f} req/s  p50 "
        f"{result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
        f"{result.cpu_us:6.1f} us/req (cpu {result.cpu_pct:3.0f}%, h2load "
        f"{result.client_cpu_pct:3.0f}%)  failed {result.failed} {result.error[:80]}",
        file=sys.stderr,
    )
    return result


def median(results: list[Result]) -> Result:
    good = [r for r in results if r.rps] or results
    first = good[0]
    return Result(
        first.server,
        first.scenario,
        rps=statistics.median(r.rps for r in good),
        p50_ms=statistics.median(r.p50_ms for r in good),
        p99_ms=statistics.median(r.p99_ms for r in good),
        cpu_us=statistics.median(r.cpu_us for r in good),
        cpu_pct=statistics.median(r.cpu_pct for r in good),
        client_cpu_pct=statistics.median(r.client_cpu_pct for r in good),
        succeeded=sum(r.succeeded for r in good),
        failed=sum(r.failed for r in good),
        error=first.error,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--servers",
        default="palfrey,hypercorn,uvicorn-zttp,granian",
        help="comma-separated; `palfrey@DIR` runs Palfrey from another checkout",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), type=lambda v: v.split(","))
    parser.add_argument(
        "--zttp-python",
        default=PYTHON,
        help="the Python of a venv with uvicorn and zttp (see the module docstring)",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for tool in ("h2load", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install nghttp2-client util-linux)")
            return 2
    servers = args.servers.split(",")
    ZTTP_PYTHON[0] = args.zttp_python
    notes = []
    if "uvicorn-zttp" in servers and not zttp_available():
        servers.remove("uvicorn-zttp")
        notes.append("uvicorn-zttp skipped: the 'zttp' package is not installed")
        print(notes[-1], file=sys.stderr)
    rounds: list[list[Result]] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        tls = make_cert(tmp)
        (tmp / "body.bin").write_bytes(bytes(range(256)) * 256)  # 64 KiB
        for number in range(args.repeat):
            print(f"round {number + 1}/{args.repeat}", file=sys.stderr)
            rounds.append(run_round(args, servers, tls, tmp))
    table = {}
    for scenario in args.scenarios:
        for server in servers:
            runs = [
                r for rnd in rounds for r in rnd if (r.server, r.scenario) == (server, scenario)
            ]
            if runs:
                table[scenario, server] = median(runs)
    print(
        "\n| scenario | server | CPU µs/req | req/s | p50 ms | p99 ms | server CPU "
        "| h2load CPU | failed | req/s vs uvicorn-zttp | req/s vs Palfrey HTTP/1.1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    h1 = table.get(("h1", "palfrey"))
    for (scenario, server), result in table.items():
        base = table.get((scenario, "uvicorn-zttp"))
        ratio = f"{result.rps / base.rps:.2f}x" if base and base.rps else "-"
        h1_ratio = f"{result.rps / h1.rps:.2f}x" if h1 and h1.rps and scenario != "h1" else "-"
        print(
            f"| {scenario} | {server} | {result.cpu_us:.1f} | {result.rps:.0f} | "
            f"{result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.cpu_pct:.0f}% | "
            f"{result.client_cpu_pct:.0f}% | {result.failed} | {ratio} | {h1_ratio} |"
        )
    for note in notes:
        print(f"\n{note}")
    if args.json:
        data: dict[str, Any] = {
            "settings": {k: str(v) for k, v in vars(args).items()},
            "python": sys.version,
            "notes": notes,
            "rounds": [[vars(r) for r in rnd] for rnd in rounds],
            "medians": [vars(r) | {"raw": ""} for r in table.values()],
        }
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
