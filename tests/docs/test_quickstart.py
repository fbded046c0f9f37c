"""The quickstart, followed to the letter: its main.py is served by each of its three
`palfrey` commands (flags, manifest, environment only) and answered over loopback by the
page's own `curl` command and by httpx, with the output the page shows.

Only the port changes: the page says 8000, the test asks for 0 and reads the bound port
back from the log, as every test server here does.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.docs.snippets import ROOT, Block, Command, blocks_of, shell_commands, transcript
from tests.helpers.process import PalfreyProcess

PAGE = ROOT / "docs" / "getting-started" / "quickstart.md"
PORT = "8000"


def _blocks() -> tuple[Block, ...]:
    return blocks_of(PAGE)


def _serving_commands() -> list[Command]:
    """The page's `palfrey` commands that serve (no --check-config and the like)."""
    found = []
    for block in _blocks():
        if block.lang != "bash":
            continue
        for cmd in shell_commands(block.text):
            args = cmd.palfrey_args
            if args is not None and not any(a.startswith("--check") for a in args):
                found.append(cmd)
    return found


def _on_port_zero(cmd: Command) -> tuple[list[str], dict[str, str]]:
    args = cmd.palfrey_args or []
    args = ["0" if a == PORT and i and args[i - 1] == "--port" else a for i, a in enumerate(args)]
    env = {k: ("0" if k == "PALFREY_PORT" and v == PORT else v) for k, v in cmd.env.items()}
    return args, env


def _write_files(folder: Path) -> None:
    for block in _blocks():
        if block.file and "invalid" not in block.marker:
            text = block.text.replace(f"port = {PORT}", "port = 0")
            (folder / block.file).write_text(text, encoding="utf-8")


def _curl() -> tuple[list[str], list[str]]:
    """The page's curl command and the output it shows."""
    for block in _blocks():
        if block.lang == "console":
            for step in transcript(block.text):
                if step.command.startswith("curl "):
                    return step.command.split(), step.output
    raise AssertionError("the quickstart shows no curl command")


def _shown_log() -> list[str]:
    (block,) = [b for b in _blocks() if b.lang == "text" and "running on" in b.text]
    return block.text.strip().split("\n")


def test_the_quickstart_has_three_ways_to_serve() -> None:
    commands = _serving_commands()
    assert len(commands) == 3, commands
    assert any("--config" in (c.palfrey_args or []) for c in commands)
    assert any(not c.palfrey_args and "PALFREY_APP" in c.env for c in commands)


@pytest.mark.parametrize("index", range(3), ids=["flags", "manifest", "environment"])
def test_each_way_serves_the_app_and_curl_gets_the_page(index: int, tmp_path: Path) -> None:
    _write_files(tmp_path)
    args, env = _on_port_zero(_serving_commands()[index])
    curl, shown = _curl()
    with PalfreyProcess(args, cwd=tmp_path, env=env) as proc:
        port = proc.wait_for_port()
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert response.status_code == 200
        assert response.text.splitlines() == shown
        command = [part.replace(f":{PORT}/", f":{port}/") for part in curl]
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == shown
        proc.wait_for_log('"GET / HTTP/1.1" 200 OK')
        for line in _shown_log():
            expected = line.replace(f":{PORT} ", f":{port} ")
            assert expected in proc.log, f"the page shows {line!r}; the log is:\n{proc.log}"
        proc.signal(signal.SIGINT)  # Ctrl+C
        assert proc.wait(30) == 0, proc.log


def test_the_access_log_line_has_the_shape_the_page_shows(tmp_path: Path) -> None:
    (access,) = [b for b in _blocks() if b.lang == "text" and '"GET / HTTP/1.1"' in b.text]
    pattern = re.escape(access.text.strip()).replace("51234", r"\d+")
    _write_files(tmp_path)
    args, env = _on_port_zero(_serving_commands()[0])
    with PalfreyProcess(args, cwd=tmp_path, env=env) as proc:
        port = proc.wait_for_port()
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        proc.wait_for_log('"GET / HTTP/1.1"')
        assert re.search(pattern, proc.log), proc.log
