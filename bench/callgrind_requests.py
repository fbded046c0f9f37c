"""Instructions per request of a real server process over loopback, cleartext or TLS.

The server (Palfrey or uvicorn, httptools + uvloop, access log off) runs under
`valgrind --tool=callgrind --trace-children=yes`; one keep-alive client connection sends
hello GETs (or 64 KiB echo POSTs) one after another, so every request takes the same
path through the event loop. The server runs twice, once serving `--base` requests and
once `--base + --requests`; the difference of the serving process's totals divided by
`--requests` is the cost of one request, start-up and handshake excluded. Unlike
requests per second this does not move with the machine's load, so it is the figure to
compare versions with (kernel time is not counted: see `tls.py` for that). Start-up
itself varies by a million instructions or two between runs, so keep `--requests` in the
thousands (100 requests can even come out negative).

    python bench/callgrind_requests.py --servers palfrey,uvicorn --modes cleartext,tls
    python bench/callgrind_requests.py --servers palfrey --modes tls --path /echo

Each run takes about a minute per 4,000 hello requests.
"""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import HOST, free_port
from tls import make_certificate

BENCH_DIR = Path(__file__).resolve().parent
ECHO_BODY = b"x" * 65536


def serve_and_count(
    server: str, mode: str, path: str, count: int, folder: Path, pems: tuple[Path, Path, Path]
) -> int:
    """Instructions of the serving process after it answered `count` requests (plus a
    100-request warm-up), then stopped. `pems`: the CA, certificate and key files."""
    ca, cert, key = pems
    port = free_port()
    argv = [sys.executable, "-m", server, "apps:app", "--host", HOST, "--port", str(port)]
    argv += ["--http", "httptools", "--loop", "uvloop", "--no-access-log"]
    argv += ["--log-level", "warning"]
    if server == "palfrey":
        argv.append("--no-plan-cache")  # every run validates: the same start-up work
    if mode == "tls":
        argv += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    out = folder / "callgrind"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALFREY_", "UVICORN_"))}
    env["PYTHONPATH"] = str(BENCH_DIR)
    grind = ["valgrind", "--tool=callgrind", "--trace-children=yes"]
    grind.append(f"--callgrind-out-file={out}/out.%p")
    process = subprocess.Popen(
        [*grind, *argv],
        cwd=BENCH_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conn = _connect(port, mode, ca, deadline=time.monotonic() + 120)
        for _ in range(100 + count):
            if path == "/echo":
                conn.request("POST", path, body=ECHO_BODY)
            else:
                conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"{server}: {path} answered {response.status}")
        conn.close()
    finally:
        process.terminate()
        process.wait(120)
    # The serving process is the one that ran the request path: the most instructions
    # among those that ran the parser (Palfrey's launcher process parses nothing).
    totals = []
    for file in out.iterdir():
        text = file.read_text(errors="replace")
        if "llhttp" not in text:
            continue
        for line in text.splitlines():
            if line.startswith(("summary:", "totals:")):
                totals.append(int(line.split()[1]))
                break
    if not totals:
        raise SystemExit(f"{server}: no callgrind output of a serving process")
    return max(totals)


def _connect(port: int, mode: str, ca: Path, deadline: float) -> http.client.HTTPConnection:
    context = ssl.create_default_context(cafile=str(ca)) if mode == "tls" else None
    while True:
        if context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                HOST, port, context=context, timeout=60
            )
        else:
            conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            conn.connect()
            return conn
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="palfrey,uvicorn")
    parser.add_argument("--modes", default="cleartext,tls")
    parser.add_argument("--path", default="/", choices=["/", "/echo"])
    parser.add_argument("--base", type=int, default=400)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pems = make_certificate(folder)
        for server in args.servers.split(","):
            for mode in args.modes.split(","):
                low = serve_and_count(server, mode, args.path, args.base, folder, pems)
                high = serve_and_count(
                    server, mode, args.path, args.base + args.requests, folder, pems
                )
                per = (high - low) / args.requests
                rows.append((server, mode, per))
                print(f"{server:8} {mode:9} {args.path:6} {per:10,.0f} instructions/request")
    print("\n| server | mode | path | instructions per request |\n|---|---|---|---:|")
    for server, mode, per in rows:
        print(f"| {server} | {mode} | {args.path} | {per:,.0f} |")


if __name__ == "__main__":
    main()
