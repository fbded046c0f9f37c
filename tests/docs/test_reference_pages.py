"""Hand-written reference pages that list what the code defines are checked against it,
so a new option, exit code or error family cannot be added without its documentation."""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
from pathlib import Path

import httpx

from palfrey.config.registry import Option, options
from tests.docs.snippets import ROOT, blocks_of
from tests.helpers.process import BIN, PalfreyProcess, clean_env

REFERENCE = ROOT / "docs" / "reference"


def _env_row(option: Option) -> str:
    flat = (
        f"`{option.flat_env}`" if option.flat_env and option.flat_env != option.nested_env else ""
    )
    anchor = option.key.replace(".", "")
    return f"| [`{option.key}`](configuration.md#{anchor}) | `{option.nested_env}` | {flat} |"


def test_the_environment_page_lists_every_option_with_its_names() -> None:
    page = (REFERENCE / "environment.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| [`")]
    expected = [_env_row(option) for option in options()]
    missing = [row for row in expected if row not in rows]
    extra = [row for row in rows if row not in expected]
    report = "docs/reference/environment.md is out of date.\n" + "".join(
        [*(f"add:    {row}\n" for row in missing), *(f"remove: {row}\n" for row in extra)]
    )
    assert not missing, report
    assert not extra, report


def _table_names(page: str, header: str) -> set[str]:
    """The backticked names in the first column of the table whose header is `header`."""
    lines = page.splitlines()
    start = lines.index(header) + 2
    names: set[str] = set()
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_the_json_log_lines_have_exactly_the_documented_fields(tmp_path: Path) -> None:
    page = REFERENCE / "logging.md"
    (example,) = [b for b in blocks_of(page) if b.lang == "json"]
    documented = json.loads(example.text)
    table = _table_names(page.read_text(encoding="utf-8"), "| Field | In | Meaning |")
    assert table == set(documented) | {"exception"}
    quickstart = ROOT / "docs" / "getting-started" / "quickstart.md"
    (app,) = [b for b in blocks_of(quickstart) if b.file == "main.py"]
    (tmp_path / "main.py").write_text(app.text, encoding="utf-8")
    args = ["main:app", "--port", "0", "--logging-format", "json"]
    with PalfreyProcess(args, cwd=tmp_path) as proc:
        proc.wait_for_port()
        httpx.get(f"http://127.0.0.1:{proc.port}/?x=1", timeout=5)
        proc.wait_for_log('"logger": "palfrey.access"')
        lines = [json.loads(line) for line in proc.lines if line.startswith("{")]
    (access,) = [line for line in lines if line["logger"] == "palfrey.access"]
    assert set(access) == set(documented)
    assert all(
        set(line) == {"time", "level", "logger", "message"} for line in lines if line is not access
    )
    assert access["path"] == "/?x=1"
    assert access["bytes"] == 14


def test_the_listener_errors_shown_are_the_ones_palfrey_prints(tmp_path: Path) -> None:
    """Each documented bind failure, provoked for real (the port and paths adapted)."""
    page = REFERENCE / "exit-codes.md"
    (shown,) = [b for b in blocks_of(page) if b.lang == "text" and "address already" in b.text]
    lines = shown.text.strip().splitlines()
    (tmp_path / "main.py").write_text("async def app(scope, receive, send): ...\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            "address already in use": (["--port", str(port)], f":{port}", ":8000"),
            "address not available": (["--host", "192.0.2.1"], "192.0.2.1", "10.1.2.3"),
            "no such directory": (
                ["--uds", f"{tmp_path}/missing/app.sock"],
                f"{tmp_path}/missing",
                "/run/myapp",
            ),
            "fd://3": (["--fd", "3"], "", ""),
        }
        checked = 0
        for line in lines:
            for key, (args, real, documented) in cases.items():
                if key not in line:
                    continue
                result = subprocess.run(
                    [str(BIN / "palfrey"), "main:app", *args],
                    cwd=tmp_path,
                    env=clean_env(),
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                assert result.returncode == 1, result.stderr
                assert result.stderr.strip().replace(real, documented) == line
                checked += 1
    assert checked == 4


def test_the_conformance_figures_match_the_committed_results() -> None:
    page = (ROOT / "docs" / "operations" / "conformance.md").read_text(encoding="utf-8")
    summary = json.loads(
        (ROOT / "tests" / "conformance" / "autobahn" / "results" / "summary.json").read_text()
    )
    for backend, result in summary["backends"].items():
        behaviour = result["behavior"]
        row = (
            f"| {backend} | {result['cases']} | {behaviour.get('OK', 0)} | "
            f"{behaviour.get('NON-STRICT', 0)} | {behaviour.get('INFORMATIONAL', 0)} | "
            f"{behaviour.get('FAILED', 0)} | {'pass' if result['passed'] else 'FAIL'} |"
        )
        assert row in page, f"conformance.md should show: {row}"
    from tests.conformance.conftest import BACKENDS
    from tests.conformance.corpus import CASES

    assert f"holds {len(CASES)} hostile or malformed requests" in page
    assert f"{len(CASES) * len(BACKENDS)} runs per CI build" in page
    frames = (ROOT / "tests" / "conformance" / "test_http2_frames.py").read_text()
    assert f"({frames.count(chr(10) + 'def test_')} tests)" in page


def _message_templates() -> list[re.Pattern[str]]:
    """Every string literal in palfrey/ as a pattern: %-placeholders and f-string fields
    match anything (implicit concatenation is joined by the parser)."""
    patterns = []
    for path in (ROOT / "palfrey").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value if isinstance(v, ast.Constant) else "\x00" for v in node.values
                )
            else:
                continue
            parts = re.split(r"%[-#0 +]?\d*(?:\.\d+)?[sdfr]|\x00", text)
            if sum(len(part) for part in parts) >= 15:
                patterns.append(re.compile(".*".join(re.escape(part) for part in parts)))
    return patterns


def test_the_log_messages_listed_are_ones_palfrey_writes() -> None:
    """Each message in 'Messages worth knowing' is one Palfrey's code writes (the values
    shown in place of its placeholders aside)."""
    page = (REFERENCE / "logging.md").read_text(encoding="utf-8")
    section = page.split("## Messages worth knowing", 1)[1]
    messages = [
        match.group(1)
        for line in section.splitlines()
        if line.startswith("| `")
        for match in re.finditer(r"`([^`]+)`", line.split("|")[1])
    ]
    assert len(messages) >= 10
    templates = _message_templates()
    missing = [m for m in messages if not any(t.fullmatch(m) for t in templates)]
    assert not missing, "logging.md lists messages Palfrey does not write:\n" + "\n".join(missing)
