"""What the PROXY protocol costs: hello GET through haproxy (TCP mode) into Palfrey, with
and without `send-proxy-v2` / `proxy.protocol = "v2"`, in the same run.

Both arms go through the same haproxy with the same keep-alive connections (wrk -c64),
so the difference is Palfrey reading one header per connection. Palfrey runs on CPU 0;
haproxy and wrk share CPU 1, so client-side throughput may cap req/s: compare the
server's CPU per request (µs/req), which the client side cannot distort.

    .venv/bin/python bench/proxy_protocol.py --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import HOST, cpu_seconds, free_port

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
HAPROXY_CONFIG = """
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind {host}:{front}
    default_backend palfrey
backend palfrey
    server one {host}:{back} {send}
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection((HOST, port), timeout=1).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def _process(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def run_arm(proxy: bool, duration: int, server_cpu: str, client_cpu: str) -> dict[str, float]:
    back, front = free_port(), free_port()
    argv = ["taskset", "-c", server_cpu, str(BIN / "palfrey"), "apps:app", "--port", str(back)]
    argv += ["--no-access-log", "--log-level", "warning", "--http", "httptools"]
    argv += ["--loop", "uvloop", *(["--proxy-protocol", "v2"] if proxy else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PALFREY_")}
    env["PYTHONPATH"] = str(BENCH)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "haproxy.cfg"
        send = "send-proxy-v2" if proxy else ""
        config.write_text(HAPROXY_CONFIG.format(host=HOST, front=front, back=back, send=send))
        haproxy = ["taskset", "-c", client_cpu, "haproxy", "-db", "-f", str(config)]
        with _process(argv, cwd=BENCH, env=env) as server, _process(haproxy) as balancer:
            _wait_port(back, server)
            _wait_port(front, balancer)
            lua = BENCH / "lua" / "report.lua"
            wrk = ["taskset", "-c", client_cpu, "wrk", "-t1", "-c64", f"-d{duration}s"]
            wrk += ["--latency", "-s", str(lua), f"http://{HOST}:{front}/"]
            subprocess.run([*wrk[:5], "-d1s", *wrk[6:]], capture_output=True, check=True)
            before = cpu_seconds(server.pid)
            out = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
            used = cpu_seconds(server.pid) - before
    line = next(x for x in out.splitlines() if x.startswith("BENCH_RESULT "))
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    return {
        "rps": raw["requests"] / seconds,
        "us_per_req": used * 1e6 / raw["requests"],
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "server_cpu_pct": 100 * used / seconds,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args()
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for round_number in range(args.rounds):
        for proxy in (False, True):  # alternating, so a noisy moment hits both
            result = run_arm(proxy, args.duration, args.server_cpu, args.client_cpu)
            results[proxy].append(result)
            label = "v2" if proxy else "off"
            print(f"round {round_number + 1} {label}: {json.dumps(result)}", file=sys.stderr)
    print(f"\nhello GET through haproxy (TCP mode), wrk -c64, median of {args.rounds} rounds")
    print(f"{'proxy.protocol':<16}{'req/s':>10}{'µs/req':>9}{'p99 ms':>9}{'errors':>8}")
    medians = {}
    for proxy, rows in results.items():
        med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        medians[proxy] = med
        name = "v2" if proxy else "off"
        print(
            f"{name:<16}{med['rps']:>10.0f}{med['us_per_req']:>9.1f}{med['p99_ms']:>9.2f}"
            f"{med['errors']:>8.0f}"
        )
    ratio = medians[True]["rps"] / medians[False]["rps"]
    cost = medians[True]["us_per_req"] / medians[False]["us_per_req"]
    print(f"v2/off: {ratio:.3f}x req/s, {cost:.3f}x server CPU per request")
    spread = [r["rps"] for r in results[False]]
    print(f"noise (off arm, min..max req/s): {min(spread):.0f}..{max(spread):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
