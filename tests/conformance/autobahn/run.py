"""Run the Autobahn|Testsuite fuzzing client against Palfrey, once per WebSocket backend.

    .venv/bin/python -m tests.conformance.autobahn.run            # both backends
    .venv/bin/python -m tests.conformance.autobahn.run --backend wsproto --cases '5.*'

A Palfrey process serving `tests/conformance/autobahn/echo.py` is started on a free port
for each backend; the fuzzing client is `kosoku` (PyPI, runs the Autobahn case files
without Python 2) or the original `wstest` from `autobahntestsuite` (Python 2.7), found
on PATH or given with `--kosoku` / `--wstest`. The full HTML reports go to
`--reports` (default: a temporary directory); the summary committed to the repository is
written to `tests/conformance/autobahn/results/` (`summary.json`, `summary.md`).

Exit status 0 when every case's behaviour is OK, NON-STRICT or INFORMATIONAL and every
close behaviour is OK or INFORMATIONAL; 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
RESULTS = Path(__file__).resolve().parent / "results"
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*"]
BACKENDS = ["wsproto", "websockets-sansio"]
GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_palfrey(backend: str, http: str, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "palfrey",
        "tests.conformance.autobahn.echo:app",
        "--port",
        str(port),
        "--ws",
        backend,
        "--http",
        http,
        "--ws-max-size",
        str(16 * 1024 * 1024),
        # kosoku ends a case when an unsolicited ping arrives mid-case, so the keep-alive
        # ping (20 s by default) would fail the few 12.x cases that run longer than that.
        # Pings stay on, out of the way; cases 2.x and the integration tests cover them.
        "--ws-ping-interval",
        "600",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    process = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"palfrey ({backend}) did not start on port {port}")


def run_kosoku(kosoku: str, port: int, cases: list[str], outdir: Path, parallel: int) -> None:
    # The protocol groups run one case at a time: a 16 MiB case of group 9 running beside
    # them holds the server's single event loop long enough to trip the fuzzer's short
    # close-handshake timer. The long compression groups 12 and 13 run in parallel.
    heavy = [c for c in cases if c.split(".")[0] in ("12", "13")]
    light = [c for c in cases if c not in heavy]
    for selection, workers, part in ((light, 1, "protocol"), (heavy, parallel, "deflate")):
        if not selection:
            continue
        command = [kosoku, f"127.0.0.1:{port}", "-p", str(workers), "-o", str(outdir / part)]
        for case in selection:
            command += ["-i", case]
        subprocess.run(command, check=False)
    merged: dict[str, Any] = {}
    for index in outdir.glob("*/index.json"):
        for agent, results in json.loads(index.read_text()).items():
            merged.setdefault(agent, {}).update(results)
    (outdir / "index.json").write_text(json.dumps(merged))


def run_wstest(wstest: str, port: int, cases: list[str], outdir: Path, agent: str) -> None:
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": f"ws://127.0.0.1:{port}"}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_file = outdir / "fuzzingclient.json"
    outdir.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    subprocess.run([wstest, "-m", "fuzzingclient", "-s", str(spec_file)], check=False)


def summarise(index: Path) -> dict[str, Any]:
    data = json.loads(index.read_text())
    cases: dict[str, Any] = next(iter(data.values()))
    behaviour = collections.Counter(v["behavior"] for v in cases.values())
    close = collections.Counter(v["behaviorClose"] for v in cases.values())
    notable = {
        case: {"behavior": v["behavior"], "behaviorClose": v["behaviorClose"]}
        for case, v in sorted(cases.items(), key=lambda item: _case_key(item[0]))
        if v["behavior"] != "OK" or v["behaviorClose"] != "OK"
    }
    return {
        "cases": len(cases),
        "behavior": dict(behaviour),
        "behaviorClose": dict(close),
        "not_ok": notable,
        "passed": set(behaviour) <= GOOD and set(close) <= GOOD_CLOSE,
    }


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def write_summary(summary: dict[str, Any], runner: str, cases: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "summary.json"
    if previous.exists():  # a run of one backend keeps the other's last result
        old = json.loads(previous.read_text())
        if old.get("case_selection") == cases:
            summary = {**old.get("backends", {}), **summary}
    summary = dict(sorted(summary.items(), key=lambda item: BACKENDS.index(item[0])))
    document = {"runner": runner, "case_selection": cases, "backends": summary}
    (RESULTS / "summary.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Autobahn|Testsuite fuzzing client against Palfrey",
        "",
        f"Runner: {runner}. Cases: {', '.join(cases)}.",
        "Regenerate with `.venv/bin/python -m tests.conformance.autobahn.run`.",
        "",
        "| backend | cases | behaviour | close behaviour | verdict |",
        "|---|---|---|---|---|",
    ]
    for backend, result in summary.items():
        behaviour = ", ".join(f"{k} {v}" for k, v in sorted(result["behavior"].items()))
        close = ", ".join(f"{k} {v}" for k, v in sorted(result["behaviorClose"].items()))
        verdict = "pass" if result["passed"] else "FAIL"
        lines.append(f"| {backend} | {result['cases']} | {behaviour} | {close} | {verdict} |")
    for backend, result in summary.items():
        if result["not_ok"]:
            lines += ["", f"## {backend}: cases not plain OK", ""]
            lines += [
                f"- {case}: {v['behavior']} (close: {v['behaviorClose']})"
                for case, v in result["not_ok"].items()
            ]
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--http", choices=["h11", "httptools"], default="httptools")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated globs")
    parser.add_argument("--kosoku", default=shutil.which("kosoku"))
    parser.add_argument("--wstest", default=shutil.which("wstest"))
    parser.add_argument("--parallel", type=int, default=4, help="kosoku parallelism")
    parser.add_argument("--reports", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true", help="do not update results/")
    args = parser.parse_args(argv)
    if not args.kosoku and not args.wstest:
        raise SystemExit("neither kosoku nor wstest found: pip install kosoku")
    runner = "wstest (autobahntestsuite)" if args.wstest and not args.kosoku else "kosoku"
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    reports = args.reports or Path(tempfile.mkdtemp(prefix="palfrey-autobahn-"))
    backends = BACKENDS if args.backend == "all" else [args.backend]
    summary: dict[str, Any] = {}
    for backend in backends:
        port = free_port()
        outdir = reports / backend
        server = start_palfrey(backend, args.http, port)
        try:
            if runner == "kosoku":
                run_kosoku(args.kosoku, port, cases, outdir, args.parallel)
            else:
                run_wstest(args.wstest, port, cases, outdir, f"palfrey-{backend}")
        finally:
            server.terminate()
            server.wait(timeout=30)
        summary[backend] = summarise(outdir / "index.json")
        result = summary[backend]
        print(f"{backend}: {result['behavior']} close {result['behaviorClose']}", flush=True)
    if not args.no_write:
        write_summary(summary, runner, cases)
    print(f"reports: {reports}")
    return 0 if all(result["passed"] for result in summary.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    sys.exit(main())
