"""Worker benchmark: requests/s with 1 and 2 workers (Palfrey and uvicorn --workers 2 in
the same run), and failed requests while Palfrey rolls its workers on SIGHUP under load.

    .venv/bin/python bench/workers.py            # ~1 min
    .venv/bin/python bench/workers.py --duration 10 --json bench/results/workers.json

The hello scenario of bench/apps.py (`GET /`, 13 bytes). wrk shares the machine's CPUs
with the servers (no pinning: two workers need both cores), so on a 2-CPU machine the
2-worker numbers are bounded by the load generator too; compare the servers with each
other, not with the single-worker bench/http1.py figures.

The rolling-restart part keeps `--connections` keep-alive connections busy with wrk and
sends SIGHUP every `--hup-every` seconds; each SIGHUP replaces both workers one at a time.
It reports wrk's socket errors and non-2xx responses. A second pass uses a Python client
loop (httpx, 4 connections) and counts failed requests exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from procstat import free_port

BENCH = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALFREY_", "UVICORN_"))}
    proc = subprocess.Popen(
        command,
        cwd=BENCH,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    time.sleep(1.0)  # let the other workers finish starting too
                    return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{command[0]} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wrk(port: int, duration: float, connections: int, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
         f"http://{HOST}:{port}/"],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors
        else {}
    )
    return {
        "requests_per_s": rps,
        "requests": total,
        "socket_errors": socket_errors,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "raw": out,
    }


def servers(port: int) -> dict[str, list[str]]:
    palfrey = [str(VENV_BIN / "palfrey"), "apps:app", "--host", HOST, "--port", str(port),
               "--no-access-log", "--log-level", "warning", "--lifespan", "off"]  # fmt: skip
    uvicorn = [sys.executable, "-m", "uvicorn", "apps:app", "--host", HOST, "--port", str(port),
               "--no-access-log", "--log-level", "warning", "--lifespan", "off"]  # fmt: skip
    return {
        "palfrey 1 worker": palfrey,
        "palfrey 2 workers": [*palfrey, "--workers", "2"],
        "uvicorn 1 worker": uvicorn,
        "uvicorn 2 workers": [*uvicorn, "--workers", "2"],
    }


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    results = {}
    for name in servers(0):
        port = free_port()
        proc = start(servers(port)[name], port)
        try:
            wrk(port, 1, args.connections, args.threads)  # warm-up
            results[name] = wrk(port, args.duration, args.connections, args.threads)
        finally:
            stop(proc)
        print(f"{name:20} {results[name]['requests_per_s']:>10.0f} req/s", file=sys.stderr)
    return results


def rolling(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc = start([*servers(port)["palfrey 2 workers"]], port)
    hups = 0
    done = threading.Event()

    def hupper() -> None:
        nonlocal hups
        while not done.wait(args.hup_every):
            os.kill(proc.pid, signal.SIGHUP)
            hups += 1

    try:
        thread = threading.Thread(target=hupper, daemon=True)
        thread.start()
        result = wrk(port, args.duration, args.connections, args.threads)
        done.set()
        thread.join()
        result["sighups"] = hups
        time.sleep(args.hup_every)
        result["python_client"] = python_client(port, proc, args)
    finally:
        stop(proc)
    return result


def python_client(
    port: int, proc: subprocess.Popen[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + args.duration

    def client() -> None:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10) as http:
            while time.monotonic() < stop_at:
                try:
                    ok = http.get("/").status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    hups = 0
    while time.monotonic() < stop_at - 1:
        time.sleep(args.hup_every)
        os.kill(proc.pid, signal.SIGHUP)
        hups += 1
    for thread in threads:
        thread.join()
    return {**counts, "sighups": hups}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hup-every", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {
        "cpus": os.cpu_count(),
        "throughput": throughput(args),
        "rolling_sighup": rolling(args),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    print("\n| Server | req/s |\n|---|---:|")
    for name, result in report["throughput"].items():
        print(f"| {name} | {result['requests_per_s']:.0f} |")
    roll = report["rolling_sighup"]
    print(
        f"\nRolling SIGHUP under wrk load: {roll['sighups']} reloads, {roll['requests']} requests, "
        f"socket errors {roll['socket_errors'] or 'none'}, non-2xx {roll['non_2xx']}"
    )
    py = roll["python_client"]
    print(f"Python client loop: {py['sighups']} reloads, {py['ok']} ok, {py['failed']} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
