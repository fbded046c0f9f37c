"""The `palfrey` command as a user runs it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.process import PalfreyProcess

ROOT = Path(__file__).resolve().parents[2]
PALFREY = str(Path(sys.executable).parent / "palfrey")


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PALFREY_", "UVICORN_"))}
    base["COLUMNS"] = "100"
    return subprocess.run(
        [PALFREY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        cwd=cwd or ROOT,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("Running palfrey ")


def test_help_shows_sections_and_env_names() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "[http2]:" in result.stdout
    assert "PALFREY_SERVER__PORT, PALFREY_PORT" in result.stdout


def test_print_schema_is_the_committed_file() -> None:
    result = run("--print-schema")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "schemas" / "palfrey.schema.json").read_text(encoding="utf-8")


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "palfrey", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "palfrey" in result.stdout


def test_bad_manifest_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text('[server]\nprot = 1\nbacklog = "many"\n[workers]\ncount = 0\n')
    result = run(
        "--check-config", "--config", str(manifest), env={"PALFREY_TIMEOUTS__KEEP_ALIVE": "x"}
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Invalid configuration (4 problems)" in result.stderr
    assert f"{manifest}:2: unknown key 'server.prot'. Did you mean 'server.port'?" in result.stderr
    assert "PALFREY_TIMEOUTS__KEEP_ALIVE" in result.stderr


def test_check_config_reports_missing_files(tmp_path: Path) -> None:
    result = run(
        "--check-config",
        "main:app",
        "--ssl-certfile",
        str(tmp_path / "cert.pem"),
        "--log-config",
        str(tmp_path / "log.json"),
    )
    assert result.returncode == 2
    assert "'tls.certfile': file not found" in result.stderr
    assert "'logging.config': file not found" in result.stderr


def test_print_config_with_origins(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text('app = "main:app"\n[server]\nport = 9000\n')
    result = run(
        "--print-config", "--show-origins", "--config", str(manifest), "--workers", "3",
        env={"PALFREY_HOST": "0.0.0.0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"port = 9000  # {manifest}:3" in lines
    assert 'host = "0.0.0.0"  # PALFREY_HOST' in lines
    assert "count = 3  # --workers" in lines
    assert "# backlog = 2048  # default" in lines


def test_print_config_output_feeds_back(tmp_path: Path) -> None:
    first = run("--print-config", "main:app", "--port", "9100", "--http", "h2")
    manifest = tmp_path / "printed.toml"
    manifest.write_text(first.stdout)
    second = run("--print-config", "--config", str(manifest))
    assert second.returncode == 0
    assert second.stdout == first.stdout


def test_no_app_is_a_clear_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "no app given" in result.stderr


@pytest.mark.parametrize("flag", ["--bogus", "--reload-directory"])
def test_unknown_flag(flag: str) -> None:
    result = run("main:app", flag, "x")
    assert result.returncode == 2
    assert f"unknown option {flag}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flat_env_is_a_warning_only() -> None:
    result = run("--print-config", "main:app", env={"PALFREY_PROT": "1"})
    assert result.returncode == 0
    assert "warning: PALFREY_PROT is not a Palfrey setting" in result.stderr


def test_check_config_problems_name_their_source(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text(f'app = "main:app"\n[tls]\ncertfile = "{tmp_path / "missing.pem"}"\n')
    result = run("--check-config", "--config", str(manifest))
    assert result.returncode == 2
    assert f"{manifest}:3: 'tls.certfile': file not found" in result.stderr


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("nosuch:app", 'Could not import module "nosuch".'),
        ("examples.app:nope", 'Attribute "nope" not found in module "examples.app".'),
    ],
)
def test_app_that_cannot_be_imported_exits_1_without_traceback(app: str, message: str) -> None:
    result = run(app, "--port", "0")
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_passes_for_the_example_manifest() -> None:
    result = run("--check-config", "--config", "examples/configs/minimal.toml")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_check_config_reports_an_app_that_cannot_be_imported() -> None:
    result = run("--check-config", "nosuch:app")
    assert result.returncode == 2
    assert "'app': Could not import module \"nosuch\"." in result.stderr


PROBE = """
import json, os, sys

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({
        "pid": os.getpid(),
        "pydantic": "pydantic" in sys.modules,
        "framing": [name for name in ("wsproto", "websockets") if name in sys.modules],
        "xoptions": sys._xoptions,
        "from_env_file": os.environ.get("FROM_ENV_FILE"),
        "launch_marker": "_PALFREY_LAUNCH" in os.environ,
    }).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.parametrize(
    ("program", "prefix"),
    [("palfrey", []), ("python", ["-X", "probe=1", "-m", "palfrey"])],
    ids=["console-script", "python-m-with-flags"],
)
def test_the_serving_process_is_the_same_pid_without_pydantic(
    tmp_path: Path, program: str, prefix: list[str]
) -> None:
    """`palfrey` validates in a forked child and serves in the process that was started,
    which never imports pydantic: same pid, same command line and interpreter flags, the
    env file still exported."""
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / ".env").write_text("FROM_ENV_FILE=yes\n")
    args = [*prefix, "probe:app", "--port", "0", "--lifespan", "off", "--env-file", ".env"]
    with PalfreyProcess(args, cwd=tmp_path, program=program) as proc:
        seen = proc.wait_until_serving().json()
        assert proc.proc is not None
        pid = proc.proc.pid
        assert seen["pid"] == pid
        assert seen["pydantic"] is False
        assert seen["framing"] == []  # WebSocket libraries load with the first upgrade
        assert seen["from_env_file"] == "yes"
        assert seen["launch_marker"] is False  # read and removed; the app's children never see it
        assert seen["xoptions"] == ({"probe": "1"} if prefix else {})
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        assert cmdline[-len(args) :] == args  # what ps shows is what was run
        # Not merely hidden from sys.modules: pydantic's compiled core was never mapped.
        assert "pydantic_core" not in Path(f"/proc/{pid}/maps").read_text()
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.count("Palfrey running on") == 1


def test_the_supervisor_and_its_workers_never_load_pydantic(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    args = ["probe:app", "--port", "0", "--lifespan", "off", "--workers", "2"]
    with PalfreyProcess(args, cwd=tmp_path) as proc:
        seen = proc.wait_until_serving().json()
        assert proc.proc is not None
        assert seen["pydantic"] is False
        assert seen["pid"] != proc.proc.pid  # answered by a worker
        for pid in (proc.proc.pid, seen["pid"]):
            assert "pydantic_core" not in Path(f"/proc/{pid}/maps").read_text()
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_errors_found_after_the_exec_keep_their_exit_codes(tmp_path: Path) -> None:
    # TLS files are loaded by the serving process; a broken one is still exit code 2.
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    result = run("probe:app", "--port", "0", "--ssl-certfile", "cert.pem", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "tls.certfile" in result.stderr
    assert "Traceback" not in result.stderr
