"""What the access log and metrics cost: hello GET requests/s with each on, as ratios to
all off, measured in one run.

Run from the repository root with the project virtualenv::

    .venv/bin/python bench/observability.py --duration 5 --warmup 1 --repeat 5

Every configuration is Palfrey on httptools + uvloop, one process, serving bench/apps.py,
pinned to CPU 0 with wrk (64 connections, one thread) on CPU 1, exactly as bench/http1.py
runs its hello scenario (the harness, wrk script and CPU accounting are that module's).
The configurations are interleaved within each round (each round restarts every server)
and each one's requests/s is divided by the "off" run of the same round, so a machine
that gets busier or quieter during the run moves all of a round together; the median
ratio over rounds is reported, with the server CPU time per request.

Access lines go where an operator's would: the server's stdout, here a file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from http1 import (
    SCENARIOS,
    UVICORN_COMPAT_HTTPTOOLS,
    ServerConfig,
    ServerProcess,
    Settings,
    raise_nofile_limit,
    run_wrk,
)

_BASE = tuple(flag for flag in UVICORN_COMPAT_HTTPTOOLS if flag != "--no-access-log")
_METRICS = ("--metrics", "--metrics-listener", "127.0.0.1:0")
_GUNICORN = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'

CONFIGS = {
    "off": (*_BASE, "--no-access-log"),
    "text": _BASE,
    "gunicorn": (*_BASE, "--access-log-format", _GUNICORN),
    "json": (*_BASE, "--logging-format", "json"),
    "metrics": (*_BASE, "--no-access-log", *_METRICS),
    "text+metrics": (*_BASE, *_METRICS),
    "json+metrics": (*_BASE, "--logging-format", "json", *_METRICS),
}
"""Configuration name -> palfrey flags (plus --host/--port)."""

TARGETS = {
    "text": 0.85,
    "gunicorn": 0.85,
    "json": 0.85,
    "metrics": 0.90,
    "text+metrics": 0.80,
    "json+metrics": 0.80,
}
"""The issue's budget: access log (text or JSON) at most 15%, metrics 10%, both 20%."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path, default=None, help="write every round here")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    names = args.configs.split(",")
    settings = Settings(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=1,
        repeat=args.repeat,
        idle_connections=0,
        startup_timeout=20.0,
        server_cpu=0,
        client_cpu=1,
        scenarios=["hello"],
        configs=names,
    )
    hello = next(s for s in SCENARIOS if s.name == "hello")
    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(args.repeat):
        results: dict[str, dict[str, Any]] = {}
        for name in names:
            results[name] = _measure(name, settings, hello)
            row = results[name]
            print(
                f"round {number + 1}/{args.repeat} {name:>13}: {row.get('rps', 0):>9,.0f} req/s, "
                f"{row.get('server_us_per_req', 0):>5.1f} us/req, other CPU "
                f"{row.get('other_cpu_pct', 0):.0f}%",
                file=sys.stderr,
            )
        rounds.append(results)
    summary = _summary(rounds, names)
    if args.json is not None:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=2))
    print(_table(summary))
    return 0


def _measure(name: str, settings: Settings, scenario: Any) -> dict[str, Any]:
    config = ServerConfig(f"palfrey-{name}", "palfrey", "httptools+uvloop", CONFIGS[name])
    server = ServerProcess(config, settings)
    try:
        error = server.wait_ready(settings.startup_timeout)
        if error is not None:
            return {"error": f"{error}\n{server.output_tail()}"}
        run_wrk(settings, server.port, scenario, settings.warmup, server.pid)
        result = run_wrk(settings, server.port, scenario, settings.duration, server.pid)
        result.pop("output", None)
        return result
    finally:
        server.close()


def _summary(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        ratios = [
            r[name]["rps"] / r["off"]["rps"]
            for r in rounds
            if r[name].get("rps") and r.get("off", {}).get("rps")
        ]
        us = [r[name]["server_us_per_req"] for r in rounds if r[name].get("server_us_per_req")]
        other = [r[name].get("other_cpu_pct", 0.0) for r in rounds]
        summary[name] = {
            "rps": statistics.median(r[name].get("rps", 0.0) for r in rounds),
            "ratio": statistics.median(ratios) if ratios else None,
            "us_per_req": statistics.median(us) if us else None,
            "other_cpu_pct": statistics.median(other),
            "target": TARGETS.get(name),
        }
    return summary


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "config          req/s   ratio  target  us/req  other CPU%",
        "------------  -------  ------  ------  ------  ----------",
    ]
    for name, row in summary.items():
        ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else "-"
        target = f">={row['target']:.2f}" if row["target"] else ""
        us = f"{row['us_per_req']:.1f}" if row["us_per_req"] else "-"
        lines.append(
            f"{name:<12}  {row['rps']:>7,.0f}  {ratio:>6}  {target:>6}  {us:>6}  "
            f"{row['other_cpu_pct']:>10.0f}"
        )
    lines.append("ratio: median over rounds of req/s divided by the same round's 'off'.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
