"""TLS benchmark: Palfrey against uvicorn, hypercorn and granian over HTTPS, in one run.

    .venv/bin/python bench/tls.py --repeat 3 --json bench/results/tls.json   # ~12 min
    .venv/bin/python bench/tls.py --duration 3 --scenarios hello,echo --servers palfrey,uvicorn
    .venv/bin/python bench/tls.py --servers palfrey,palfrey@/tmp/old-checkout,uvicorn   # A/B
    .venv/bin/python bench/tls.py --servers "palfrey,palfrey+MALLOC_MMAP_THRESHOLD_=131072"
    .venv/bin/python bench/tls.py --cleartext          # the same scenarios without TLS

Every server serves `bench/apps.py` with a trustme certificate made by this script (one
key, PKCS#8, for all of them), one worker, access log off, pinned to CPU 0; the load
generator runs pinned to CPU 1:

    hello    wrk, GET / (13-byte body), 64 connections, HTTP/1.1 over TLS
    echo     wrk, POST /echo with 64 KiB echoed back, 64 connections
    h2       h2load, GET /, ALPN h2, 16 connections x 10 streams (servers that speak h2)
    ws       bench/websocket.py's raw client over TLS: 32 B text echo, 64 connections
    ws-64k   the same with 64 KiB messages

Each server is started fresh for each scenario (the h2 scenario needs HTTP/2 turned on,
the others measure the server as it runs by default); servers alternate within a round
and the order rotates between rounds. Per run: a warm-up, then the measured run, with
requests (or echoed messages) per second, the server's CPU time per request (utime +
stime of its process tree from /proc, the figure that holds on a busy machine), its CPU
share, the load generator's CPU share (wait4 rusage, or the WebSocket client's own
process time), RSS when idle and after the run. With --repeat N the table shows the
medians, the spread of req/s over the rounds ((max - min) / median) and the median of the
per-round ratios against uvicorn.

A server given as `NAME@DIR` runs Palfrey imported from another checkout; `NAME+VAR=VALUE`
(repeatable) adds environment variables to that server only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procstat import HOST, cpu_seconds, die_with_parent, free_port, rss_kib

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PYTHON = sys.executable
ECHO_BYTES = 64 * 1024
SERVER_ENV_PREFIXES = ("PALFREY_", "UVICORN_", "GRANIAN_", "HYPERCORN_", "WEB_CONCURRENCY")


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "wrk", "h2load" or "ws"
    path: str = "/"
    script: str = "report.lua"
    ws_size: int = 0
    body_bytes: int = ECHO_BYTES


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("hello", "wrk"),
        Scenario("echo", "wrk", "/echo", "echo.lua"),
        Scenario("h2", "h2load"),
        Scenario("ws", "ws", ws_size=32),
        Scenario("ws-64k", "ws", ws_size=64 * 1024),
        # Not run by default: large transient buffers (the allocator's mmap threshold).
        Scenario("echo-1m", "wrk", "/echo", "echo.lua", body_bytes=1024 * 1024),
        Scenario("stream", "wrk", "/stream"),
        Scenario("ws-1m", "ws", ws_size=1024 * 1024),
    )
}
DEFAULT_SCENARIOS = "hello,echo,h2,ws,ws-64k"


@dataclass(frozen=True)
class Variant:
    """A server as given on the command line: `palfrey`, `palfrey@DIR`, `uvicorn+A=B`."""

    label: str
    server: str
    tree: str
    env: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> Variant:
        head, *assignments = text.split("+")
        server, _, tree = head.partition("@")
        env = tuple(tuple(item.split("=", 1)) for item in assignments)
        if server not in ("palfrey", "uvicorn", "hypercorn", "granian"):
            raise SystemExit(f"unknown server {server!r}")
        if any(len(pair) != 2 for pair in env):
            raise SystemExit(f"{text!r}: expected NAME+VAR=VALUE")
        return cls(text, server, tree or str(REPO_ROOT), env)  # type: ignore[arg-type]


@dataclass
class Run:
    variant: str
    scenario: str
    rate: float = 0.0
    count: int = 0
    failed: int = 0
    server_us: float = 0.0  # server CPU µs per request (or echoed message)
    server_pct: float = 0.0
    client_pct: float = 0.0
    p99_ms: float = 0.0
    idle_rss_kib: int = 0
    after_rss_kib: int = 0
    error: str = ""
    output: str = field(default="", repr=False)


# -- certificates ------------------------------------------------------------------------


def make_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A trustme CA and a server certificate for 127.0.0.1; the key in PKCS#8 (granian
    reads no other form)."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    issued = ca.issue_cert("localhost", HOST)
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cafile, certfile, keyfile = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(cafile))
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    keyfile.write_bytes(pkcs8)
    return cafile, certfile, keyfile


# -- servers -----------------------------------------------------------------------------


def command(
    variant: Variant, port: int, h2: bool, tls: tuple[Path, Path] | None, ws: str
) -> list[str] | None:
    """The server's argv for one scenario, or None when it does not serve that scenario."""
    address = ["--host", HOST, "--port", str(port)]
    if variant.server in ("palfrey", "uvicorn"):
        if h2 and variant.server == "uvicorn":
            return None  # uvicorn 0.54 speaks no HTTP/2
        http = "h2" if h2 else "httptools"
        argv = [PYTHON, "-m", variant.server, "apps:app", *address, "--loop", "uvloop"]
        argv += ["--http", http, "--ws", ws, "--no-access-log", "--log-level", "warning"]
        if tls:
            argv += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
        return argv
    if variant.server == "hypercorn":
        argv = [PYTHON, "-m", "hypercorn", "apps:app", "--bind", f"{HOST}:{port}"]
        argv += ["-k", "uvloop", "--log-level", "warning"]
        if tls:
            argv += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
        return argv
    script = Path(PYTHON).parent / "granian"
    argv = [str(script)] if script.exists() else [PYTHON, "-m", "granian"]
    argv += ["--interface", "asgi", "--loop", "uvloop", "--workers", "1", *address]
    argv += ["--http", "auto" if h2 else "1", "--no-access-log", "--log-level", "warning"]
    if tls:
        argv += ["--ssl-certificate", str(tls[0]), "--ssl-keyfile", str(tls[1])]
    return [*argv, "apps:app"]


class Server:
    """One server process in its own session, pinned, output kept in a file."""

    def __init__(self, variant: Variant, argv: list[str], port: int, cpu: int) -> None:
        self.port = port
        env = {k: v for k, v in os.environ.items() if not k.startswith(SERVER_ENV_PREFIXES)}
        paths = [str(BENCH_DIR), variant.tree, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env.update(variant.env)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            cwd=BENCH_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-600:]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# -- checks ------------------------------------------------------------------------------


def request(
    port: int, context: ssl.SSLContext | None, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(HOST, port, timeout=5)
    else:
        conn = http.client.HTTPSConnection(HOST, port, timeout=5, context=context)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server: Server, context: ssl.SSLContext | None, timeout: float) -> str:
    """Empty once `GET /` answers "Hello, world!", else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return f"exited with {server.process.returncode}: {server.tail()}"
        try:
            status, body = request(server.port, context, "GET", "/")
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
            continue
        return "" if (status, body) == (200, b"Hello, world!") else f"GET / -> {status} {body!r}"
    return f"not serving after {timeout:.0f} s: {server.tail()}"


def check_echo(port: int, context: ssl.SSLContext | None, size: int) -> str:
    payload = os.urandom(size)
    status, body = request(port, context, "POST", "/echo", payload)
    return "" if (status, body) == (200, payload) else f"POST /echo -> {status}, {len(body)} B"


# -- load generators ---------------------------------------------------------------------


def run_pinned(
    argv: list[str], cpu: int, seconds: float, env: dict[str, str] | None = None
) -> tuple[str, float]:
    """Run a load generator on `cpu`; its output and its CPU seconds (wait4 rusage)."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent(),
        )
        deadline = time.monotonic() + seconds + 60
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return out.read().decode(errors="replace"), usage.ru_utime + usage.ru_stime


def wrk(run: Run, url: str, scenario: Scenario, args: argparse.Namespace, seconds: float) -> None:
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{round(seconds)}s", "--timeout", "5s"]
    argv += ["-s", str(BENCH_DIR / "lua" / scenario.script), url + scenario.path]
    env = dict(os.environ, BENCH_BODY_BYTES=str(scenario.body_bytes))
    run.output, client_cpu = run_pinned(argv, args.client_cpu, seconds, env)
    marker = [line for line in run.output.splitlines() if line.startswith("BENCH_RESULT ")]
    if not marker:
        run.error = run.output[-300:]
        return
    result = json.loads(marker[0].removeprefix("BENCH_RESULT "))
    wall = result["duration_us"] / 1e6
    run.count = result["requests"]
    run.rate = run.count / wall
    run.failed = sum(result["errors"].values())
    run.p99_ms = result["latency_us"]["p99"] / 1000
    run.client_pct = 100 * client_cpu / wall


def h2load(run: Run, url: str, args: argparse.Namespace, seconds: float) -> None:
    argv = ["h2load", "-c", str(args.h2_clients), "-m", str(args.h2_streams), "-t", "1"]
    argv += ["-D", str(max(1, round(seconds))), "--connection-inactivity-timeout", "10", url + "/"]
    run.output, client_cpu = run_pinned(argv, args.client_cpu, seconds)
    for line in run.output.splitlines():
        line = line.strip()
        if line.startswith("finished in"):
            run.rate = float(line.split(",")[1].split()[0])
        elif line.startswith("requests:"):
            words = line.replace(",", "").split()
            run.count = int(words[words.index("succeeded") - 1])
            run.failed = int(words[words.index("failed") - 1])
        elif line.startswith("Application protocol:") and line.split(":")[1].strip() not in (
            "h2",
            "h2c",
        ):
            run.error = line
    if not run.count:
        run.error = run.error or run.output[-300:]
    run.client_pct = 100 * client_cpu / seconds


def websocket(
    run: Run, port: int, scenario: Scenario, args: argparse.Namespace, seconds: float, pid: int
) -> None:
    argv = [PYTHON, str(BENCH_DIR / "websocket.py"), "--client", "--port", str(port)]
    argv += ["--connections", str(args.connections), "--size", str(scenario.ws_size)]
    argv += ["--duration", str(seconds), "--server-pid", str(pid)]
    if args.cafile:
        argv += ["--cafile", str(args.cafile)]
    run.output, _ = run_pinned(argv, args.client_cpu, seconds)
    try:
        result = json.loads(run.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        run.error = run.output[-300:]
        return
    run.count, run.rate = result["messages"], result["rate"]
    run.client_pct = 100 * result["client_cpu"] / result["seconds"]
    # The client samples the server's CPU at the edges of its own measured window.
    run.server_us = result["server_us_per_msg"]
    run.server_pct = 100 * result["server_cpu"] / result["seconds"]


def load(
    run: Run, server: Server, scenario: Scenario, args: argparse.Namespace, seconds: float
) -> None:
    url = f"{'http' if args.cleartext else 'https'}://{HOST}:{server.port}"
    before, started = cpu_seconds(server.pid), time.monotonic()
    if scenario.kind == "wrk":
        wrk(run, url, scenario, args, seconds)
    elif scenario.kind == "h2load":
        h2load(run, url, args, seconds)
    else:
        websocket(run, server.port, scenario, args, seconds, server.pid)
        return
    cpu = cpu_seconds(server.pid) - before
    run.server_pct = 100 * cpu / (time.monotonic() - started)
    run.server_us = cpu * 1e6 / run.count if run.count else 0.0


# -- one run, one round ------------------------------------------------------------------


def measure(variant: Variant, scenario: Scenario, args: argparse.Namespace) -> Run | None:
    run = Run(variant.label, scenario.name)
    port = free_port()
    tls = None if args.cleartext else (args.certfile, args.keyfile)
    argv = command(variant, port, scenario.kind == "h2load", tls, args.ws)
    if argv is None:
        return None
    server = Server(variant, argv, port, args.server_cpu)
    try:
        run.error = wait_ready(server, args.context, args.startup_timeout)
        if not run.error and scenario.path == "/echo":
            run.error = check_echo(port, args.context, scenario.body_bytes)
        if run.error:
            return run
        time.sleep(0.5)
        run.idle_rss_kib = rss_kib(server.pid)
        if args.warmup:
            load(Run(variant.label, scenario.name), server, scenario, args, args.warmup)
        load(run, server, scenario, args, args.duration)
        run.after_rss_kib = rss_kib(server.pid)
        if server.process.poll() is not None:
            run.error = f"server died: {server.tail()}"
    finally:
        server.stop()
    return run


def rotated(items: list[Variant], by: int) -> list[Variant]:
    by %= len(items)
    return items[by:] + items[:by]


def run_round(number: int, variants: list[Variant], args: argparse.Namespace) -> list[Run]:
    runs = []
    for scenario in args.scenarios:
        for variant in rotated(variants, number):
            run = measure(variant, SCENARIOS[scenario], args)
            if run is None:
                continue
            runs.append(run)
            print(
                f"  {scenario:7} {variant.label:28} {run.rate:9,.0f}/s  {run.server_us:6.1f} us"
                f"  srv {run.server_pct:3.0f}%  cli {run.client_pct:3.0f}%  failed {run.failed}"
                f"  RSS {run.idle_rss_kib / 1024:.1f}->{run.after_rss_kib / 1024:.1f} MiB"
                f"  {run.error[:120]}",
                file=sys.stderr,
                flush=True,
            )
    return runs


# -- report ------------------------------------------------------------------------------


def spread(values: list[float]) -> float:
    middle = statistics.median(values)
    return 100 * (max(values) - min(values)) / middle if middle else 0.0


def summarize(
    rounds: list[list[Run]], variants: list[Variant], args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for scenario in args.scenarios:
        base = {
            index: {r.variant: r for r in runs if r.scenario == scenario and not r.error}
            for index, runs in enumerate(rounds)
        }
        for variant in variants:
            runs = [by[variant.label] for by in base.values() if variant.label in by]
            if not runs:
                continue
            ratios = [
                by[variant.label].rate / by[args.baseline].rate
                for by in base.values()
                if variant.label in by and args.baseline in by and by[args.baseline].rate
            ]
            rows.append(
                {
                    "scenario": scenario,
                    "server": variant.label,
                    "rounds": len(runs),
                    "rate": statistics.median(r.rate for r in runs),
                    "spread_pct": spread([r.rate for r in runs]),
                    "vs_baseline": statistics.median(ratios) if ratios else None,
                    "server_us": statistics.median(r.server_us for r in runs),
                    "server_pct": statistics.median(r.server_pct for r in runs),
                    "client_pct": statistics.median(r.client_pct for r in runs),
                    "p99_ms": statistics.median(r.p99_ms for r in runs),
                    "failed": sum(r.failed for r in runs),
                    "idle_rss_mib": statistics.median(r.idle_rss_kib for r in runs) / 1024,
                    "after_rss_mib": statistics.median(r.after_rss_kib for r in runs) / 1024,
                }
            )
    return rows


def table(rows: list[dict[str, Any]], baseline: str) -> str:
    lines = [
        f"| scenario | server | req/s | spread | vs {baseline} | server µs/req | server CPU "
        "| client CPU | idle RSS MiB | RSS after MiB | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = "" if row["vs_baseline"] is None else f"{row['vs_baseline']:.2f}"
        lines.append(
            f"| {row['scenario']} | {row['server']} | {row['rate']:,.0f} "
            f"| {row['spread_pct']:.0f}% | {ratio} | {row['server_us']:.1f} "
            f"| {row['server_pct']:.0f}% | {row['client_pct']:.0f}% "
            f"| {row['idle_rss_mib']:.1f} | {row['after_rss_mib']:.1f} | {row['failed']} |"
        )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": sys.version.split()[0], "ssl": ssl.OPENSSL_VERSION}
    for dist in ("palfrey", "uvicorn", "hypercorn", "granian", "uvloop", "httptools", "websockets"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


# -- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--servers", default="palfrey,uvicorn,hypercorn,granian")
    parser.add_argument(
        "--scenarios", default=DEFAULT_SCENARIOS, help=f"from {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--baseline", default="uvicorn", help="server the ratios compare to")
    parser.add_argument("--connections", type=int, default=64, help="wrk and WebSocket")
    parser.add_argument("--h2-clients", type=int, default=16)
    parser.add_argument("--h2-streams", type=int, default=10)
    parser.add_argument("--ws", default="websockets-sansio", help="Palfrey/uvicorn --ws")
    parser.add_argument("--cleartext", action="store_true", help="the same without TLS")
    parser.add_argument("--startup-timeout", type=float, default=20.0)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.scenarios = args.scenarios.split(",")
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


@contextlib.contextmanager
def certificates(args: argparse.Namespace) -> Iterator[None]:
    with tempfile.TemporaryDirectory() as folder:
        args.cafile = args.certfile = args.keyfile = args.context = None
        if not args.cleartext:
            args.cafile, args.certfile, args.keyfile = make_certificate(Path(folder))
            args.context = ssl.create_default_context(cafile=str(args.cafile))
        yield


def main() -> int:
    args = parse_args()
    for tool in ("wrk", "h2load", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install wrk nghttp2-client util-linux)")
            return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    os.sched_setaffinity(0, {args.client_cpu})  # the harness never competes with a server
    variants = [Variant.parse(text) for text in args.servers.split(",")]
    rounds = []
    with certificates(args):
        for number in range(args.repeat):
            print(f"round {number + 1}/{args.repeat}", file=sys.stderr, flush=True)
            rounds.append(run_round(number, variants, args))
    rows = summarize(rounds, variants, args)
    if args.json:
        data = {
            "argv": sys.argv,
            "versions": versions(),
            "settings": {k: str(v) for k, v in vars(args).items() if k != "context"},
            "rounds": [[vars(r) for r in runs] for runs in rounds],
            "medians": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2))
    print(table(rows, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
