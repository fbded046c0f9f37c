"""HTTP/3 benchmark: Palfrey against hypercorn (`--quic-bind`) in one run, on the same
app (`bench/apps.py`, GET / hello), with a qh3 load generator (`bench/h3load.py`).

    .venv/bin/python bench/http3.py                         # 10 s per server, 3 rounds
    .venv/bin/python bench/http3.py --duration 5 --repeat 1 --json out.json

Needs `pip install 'hypercorn[h3]' qh3` in the venv (benchmarks only). The Debian h2load
is built without HTTP/3; a client on aioquic costs about as much CPU per request as the
server, so the load comes from qh3, whose packet protection and QPACK are Rust.

Each server is pinned to CPU 0 (`taskset -c 0`), the client to CPU 1. The figures per
server: requests/s, p50/p99 latency (the client's, per request), the server's CPU time per
request (utime + stime of its process tree from /proc, read around the measured run; the
figure that survives a shared machine), and the client's CPU seconds (to show whether it,
not the server, was the limit). Servers alternate within a round; `--repeat N` reports
the median round.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from procstat import cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable


@dataclass
class Result:
    server: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    failed: int = 0
    cpu_us: float = 0.0  # server CPU microseconds per request
    server_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    error: str = ""


def make_cert(folder: Path) -> tuple[Path, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    return certfile, keyfile


def command(server: str, port: int, cert: tuple[Path, Path]) -> list[str]:
    if server.startswith("palfrey"):
        # "palfrey:2": two workers (both on CPU 0, as the taskset pins the process tree),
        # to see what the supervisor's packet steering costs.
        workers = server.partition(":")[2] or "1"
        argv = [PYTHON, "-m", "palfrey", "apps:app", "--port", str(port), "--http", "h3"]
        argv += ["--workers", workers]
        argv += ["--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[1])]
        return [*argv, "--no-access-log", "--log-level", "warning", "--lifespan", "off"]
    if server == "hypercorn":
        bind = f"127.0.0.1:{port}"
        argv = [PYTHON, "-m", "hypercorn", "apps:app", "--bind", bind, "--quic-bind", bind]
        argv += ["--certfile", str(cert[0]), "--keyfile", str(cert[1])]
        return [*argv, "--log-level", "warning", "-k", "uvloop"]
    raise ValueError(server)


def start(server: str, port: int, cert: tuple[Path, Path], log: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{BENCH}:{ROOT}"}
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command(server, port, cert)],
        cwd=BENCH,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file, never an undrained pipe
        start_new_session=True,
    )
    # The UDP listener answers once the server is up: probe it with one real request.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited")
        if load(port, duration=0.3, connections=1, streams=1).get("requests"):
            return process
        time.sleep(0.2)
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


def load(port: int, *, duration: float, connections: int, streams: int) -> dict[str, float]:
    argv = ["taskset", "-c", "1", PYTHON, str(BENCH / "h3load.py"), "--port", str(port)]
    argv += ["--duration", str(duration), "--connections", str(connections)]
    argv += ["--streams", str(streams)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        return {}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def measure(server: str, args: argparse.Namespace, cert: tuple[Path, Path]) -> Result:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        try:
            process = start(server, port, cert, log)
        except RuntimeError as exc:
            log.seek(0)
            return Result(server, error=f"{exc}: {log.read().decode(errors='replace')[-500:]}")
        try:
            load(port, duration=args.warmup, connections=args.connections, streams=args.streams)
            before = cpu_seconds(process.pid)
            out = load(
                port, duration=args.duration, connections=args.connections, streams=args.streams
            )
            used = cpu_seconds(process.pid) - before
        finally:
            stop(process)
    result = Result(server)
    if not out:
        result.error = "the load client failed"
        return result
    elapsed = out["elapsed"]
    result.requests, result.failed = int(out["requests"]), int(out["failed"])
    result.rps = result.requests / elapsed
    result.p50_ms, result.p99_ms = out["p50_ms"], out["p99_ms"]
    result.cpu_us = used / max(1, result.requests) * 1e6
    result.server_cpu_pct = used / elapsed * 100
    result.client_cpu_pct = out["cpu_s"] / elapsed * 100
    return result


def median(results: list[Result]) -> Result:
    ok = [r for r in results if not r.error] or results
    return sorted(ok, key=lambda r: r.cpu_us)[len(ok) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers", default="palfrey,hypercorn", help="also palfrey:2 (two workers)"
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    servers = args.servers.split(",")
    rounds: dict[str, list[Result]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory() as folder:
        cert = make_cert(Path(folder))
        for _ in range(args.repeat):
            for name in servers:
                rounds[name].append(measure(name, args, cert))
    shape = f"{args.connections} connections x {args.streams} streams, {args.duration:g} s"
    print(f"HTTP/3 GET / (hello), {shape}, median of {args.repeat} round(s)")
    header = f"{'server':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}"
    print(header + f" {'server CPU':>10} {'client CPU':>10} {'failed':>6}")
    chosen = {name: median(results) for name, results in rounds.items()}
    for name, r in chosen.items():
        if r.error:
            print(f"{name:<10} error: {r.error}")
            continue
        print(
            f"{name:<10} {r.rps:8.0f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {r.cpu_us:11.0f}"
            f" {r.server_cpu_pct:9.0f}% {r.client_cpu_pct:9.0f}% {r.failed:6d}"
        )
    spread = {
        name: [round(r.cpu_us) for r in results if not r.error] for name, results in rounds.items()
    }
    print("CPU µs/request of every round:", spread)
    if len(chosen) > 1 and all(not r.error for r in chosen.values()):
        p, h = chosen.get("palfrey"), chosen.get("hypercorn")
        if p and h and h.rps and p.cpu_us:
            ratio_rps, ratio_cpu = p.rps / h.rps, p.cpu_us / h.cpu_us
            print(f"palfrey/hypercorn: req/s x{ratio_rps:.2f}, CPU/request x{ratio_cpu:.2f}")
    if args.json:
        data = {name: [asdict(r) for r in results] for name, results in rounds.items()}
        args.json.write_text(json.dumps(data, indent=2))
    _ = statistics  # the median is by CPU per request, the steadier figure


if __name__ == "__main__":
    main()
