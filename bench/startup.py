"""Start-up benchmark: process spawn to the first 200 response, and idle memory.

Each server is started as its users start it (the console script, uvicorn-compatible
flags), pinned to one CPU, and polled with a raw HTTP/1.1 GET until it answers 200; the
time from spawn to that answer is one start. Servers are interleaved round by round so
a busy moment of the machine hits all of them alike, and the median of the rounds is
reported beside the ratio to uvicorn on the same stack. After the first answer the
server is left idle for a moment and the resident memory of its whole process tree is
read from /proc.

    .venv/bin/python bench/startup.py                      # 6 rounds, 1 process and 2 workers
    .venv/bin/python bench/startup.py --rounds 10 --json bench/results/startup.json

"palfrey" is a warm start, served from the plan cache that the discarded first start
filled (the common case: a restart, a new pod from a warmed image); "palfrey cold"
passes --no-plan-cache and validates the configuration at every start. granian and
hypercorn are included when they are installed in the same environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import HOST, free_port, process_tree

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CACHE = tempfile.mkdtemp(prefix="palfrey-bench-cache-")
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
STACK = ("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning")
GRANIAN = ("--interface", "asgi", "--loop", "uvloop", "--no-access-log")


@dataclass(frozen=True)
class Server:
    name: str
    program: str
    args: tuple[str, ...]
    baseline: str | None = None

    def available(self) -> bool:
        return (BIN / self.program).exists()

    def command(self, port: int) -> list[str]:
        args = [a.replace("{port}", str(port)) for a in self.args]
        return [str(BIN / self.program), *args]


SERVERS = (
    Server("uvicorn", "uvicorn", ("apps:app", "--port", "{port}", *STACK)),
    Server("palfrey", "palfrey", ("apps:app", "--port", "{port}", *STACK), baseline="uvicorn"),
    Server(
        "palfrey cold",
        "palfrey",
        ("apps:app", "--port", "{port}", "--no-plan-cache", *STACK),
        baseline="uvicorn",
    ),
    Server(
        "uvicorn --workers 2",
        "uvicorn",
        ("apps:app", "--port", "{port}", "--workers", "2", *STACK),
    ),
    Server(
        "palfrey --workers 2",
        "palfrey",
        ("apps:app", "--port", "{port}", "--workers", "2", *STACK),
        baseline="uvicorn --workers 2",
    ),
    Server(
        "palfrey --workers 2 cold",
        "palfrey",
        ("apps:app", "--port", "{port}", "--workers", "2", "--no-plan-cache", *STACK),
        baseline="uvicorn --workers 2",
    ),
    Server("granian", "granian", (*GRANIAN, "--port", "{port}", "apps:app")),
    Server("hypercorn", "hypercorn", ("--bind", f"{HOST}:{{port}}", "apps:app")),
)


def _answered(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(REQUEST)
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _rss_kib(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def start_once(
    server: Server, port: int, cpu: str, timeout: float, settle: float
) -> tuple[float, int]:
    """Milliseconds from spawn to the first 200, and the idle RSS (KiB) after `settle`."""
    pin = [] if cpu == "all" else ["taskset", "-c", cpu]
    command = [*pin, *server.command(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALFREY_", "UVICORN_"))}
    env["PYTHONPATH"] = ":".join(p for p in (str(BENCH), os.environ.get("PYTHONPATH", "")) if p)
    # Compiled bytecode is what deployed servers start from (pip writes it at install).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Palfrey's plan cache lives in this run's own directory: the discarded first start
    # fills it, so "palfrey" rows are warm starts; "cold" rows validate every time.
    env["XDG_CACHE_HOME"] = CACHE
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=BENCH,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = started + timeout
        while not _answered(port):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"{server.name} did not answer (exit {proc.poll()})")
            time.sleep(0.002)
        elapsed = (time.perf_counter() - started) * 1000.0
        time.sleep(settle)
        return elapsed, _rss_kib(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--cpu", default="0", help='CPU list the servers are pinned to ("all": not pinned)'
    )
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before RSS")
    parser.add_argument("--servers", default=",".join(s.name for s in SERVERS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        print("taskset is needed (util-linux)", file=sys.stderr)
        return 2
    wanted = set(args.servers.split(","))
    servers = [s for s in SERVERS if s.name in wanted and s.available()]
    skipped = sorted(wanted - {s.name for s in servers})
    if skipped:
        print(f"not installed or unknown, skipped: {', '.join(skipped)}", file=sys.stderr)
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    memory: dict[str, list[int]] = {s.name: [] for s in servers}
    # One port per server for the whole run, as a deployment restarts on its own port
    # (the command line is part of the plan cache's key; every server reuses addresses).
    ports = {server.name: free_port() for server in servers}
    for server in servers:  # a discarded start: bytecode written, files in the page cache
        start_once(server, ports[server.name], args.cpu, args.timeout, 0.0)
    for round_number in range(args.rounds):
        for server in servers:
            ms, rss = start_once(server, ports[server.name], args.cpu, args.timeout, args.settle)
            times[server.name].append(ms)
            memory[server.name].append(rss)
            print(
                f"round {round_number + 1}: {server.name}: {ms:.0f} ms, {rss / 1024:.1f} MiB",
                file=sys.stderr,
            )
    rows = []
    for server in servers:
        median = statistics.median(times[server.name])
        rss = statistics.median(memory[server.name]) / 1024
        ratio = ""
        if server.baseline in times:
            ratio = f"{median / statistics.median(times[server.baseline]):.2f}x"
        rows.append((server.name, median, min(times[server.name]), rss, ratio))
    where = "not pinned" if args.cpu == "all" else f"pinned to CPU {args.cpu}"
    print(f"\nstart-up, spawn to first 200, median of {args.rounds}, {where}")
    print(
        f"{'server':<22} {'median ms':>10} {'best ms':>8} {'idle RSS MiB':>13} {'vs uvicorn':>11}"
    )
    for name, median, best, rss, ratio in rows:
        print(f"{name:<22} {median:>10.0f} {best:>8.0f} {rss:>13.1f} {ratio:>11}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"times_ms": times, "rss_kib": memory}, indent=2))
    shutil.rmtree(CACHE, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
