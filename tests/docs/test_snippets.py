"""Every manifest, command and Python snippet in the documentation is checked, so the
docs cannot drift from the code (how each kind is checked: tests/docs/checks.py; the
marker convention: tests/docs/snippets.py).

One test per page walks its blocks in order, the way a reader follows the page: files a
block names are written to the page's scratch directory before the commands that use
them, and every problem of the page is reported at once.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.docs import checks
from tests.docs.snippets import ROOT, Block, all_blocks, blocks_of, pages

MANIFESTS = ("toml", "yaml", "yml", "json")
CHECKERS: dict[str, Callable[[Block, checks.Scratch], list[str]]] = {
    "python": checks.check_python,
    "py": checks.check_python,
    "bash": checks.check_shell,
    "sh": checks.check_shell,
    "shell": checks.check_shell,
    "console": checks.check_console,
    "ini": checks.check_unit,
    "systemd": checks.check_unit,
    "dockerfile": checks.check_dockerfile,
    "dotenv": checks.check_dotenv,
}
# Shown, not executed: output, diagrams, configuration of other programs (nginx is
# checked by test_nginx_blocks).
SHOWN = frozenset({"text", "mermaid", "nginx", "haproxy", "http", "lua", ""})
QUICKSTART = ROOT / "docs" / "getting-started" / "quickstart.md"


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def app_source() -> str:
    """The quickstart's main.py: the app every documented command serves."""
    (block,) = [b for b in blocks_of(QUICKSTART) if b.file == "main.py"]
    return block.text


def check_block(block: Block, scratch: checks.Scratch) -> list[str]:
    if block.skipped:
        return []
    if block.file:
        scratch.write(block.file, block.text)
    if block.lang in MANIFESTS:
        if "data" in block.marker:
            return []
        if "kubernetes" in block.marker or re.search(r"^apiVersion:", block.text, re.M):
            return checks.check_kubernetes(block, scratch)
        return checks.check_manifest(block, block.text, scratch.path)
    checker = CHECKERS.get(block.lang)
    if checker is None:
        assert block.lang in SHOWN, f"{block.id}: no check for ```{block.lang} blocks"
        return []
    return checker(block, scratch)


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_snippets(
    page: Path, tmp_path: Path, ca: trustme.CA, app_source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PALFREY_CONFIG", raising=False)
    scratch = checks.Scratch(tmp_path / "page", app_source, ca)
    # A file the page shows once may be used before it is shown (an overview at the top
    # of a page); one shown several times changes as the reader reaches each version.
    names = [b.file for b in blocks_of(page) if b.file and not b.skipped]
    for block in blocks_of(page):
        if block.file and names.count(block.file) == 1 and not block.skipped:
            scratch.write(block.file, block.text)
    problems = []
    for block in blocks_of(page):
        problems += [f"{block.id} ({block.lang}): {p}" for p in check_block(block, scratch)]
    assert not problems, "\n\n".join(problems)


def test_markers_are_known_and_skips_are_rare() -> None:
    blocks = all_blocks()  # parse_marker raises on an unknown marker or a skip without reason
    skipped = [b for b in blocks if b.skipped]
    assert len(skipped) <= max(3, len(blocks) // 30), [
        f"{b.id}: {b.marker['skip']}" for b in skipped
    ]


def test_blocks_name_their_language() -> None:
    unnamed = [b.id for b in all_blocks() if not b.lang]
    assert not unnamed, f"fenced blocks without a language (```text for plain text): {unnamed}"


NGINX_FILES = re.compile(
    r"^(\s*(?:proxy_)?ssl_(?:certificate|certificate_key|trusted_certificate|client_certificate)"
    r")\s+\S+;",
    re.M,
)


@pytest.mark.parametrize(
    "block", [b for b in all_blocks() if b.lang == "nginx"], ids=lambda b: b.id
)
def test_nginx_blocks_pass_nginx_t(block: Block, tmp_path: Path, ca: trustme.CA) -> None:
    """Each nginx snippet (an `http`-context file, as in conf.d/) passes `nginx -t`, with
    the certificate files it names replaced by generated ones."""
    nginx = checks.nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    server = ca.issue_cert("www.example.com", "palfrey.internal")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    def local(found: re.Match[str]) -> str:
        name = found.group(1).strip()
        target = "key.pem" if name.endswith("key") else "cert.pem"
        if "trusted" in name or "client" in name:
            target = "ca.pem"
        return f"{found.group(1)} {tmp_path / target};"

    site = tmp_path / "site.conf"
    site.write_text(NGINX_FILES.sub(local, block.text), encoding="utf-8")
    temp = "".join(f"{kind}_temp_path {tmp_path}/{kind}; " for kind in ("client_body", "proxy"))
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; {temp}include {site}; }}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


HAPROXY_FILES = re.compile(r"(\b(?:crt|ca-file)\s+)(\S+)")


@pytest.mark.parametrize(
    "block", [b for b in all_blocks() if b.lang == "haproxy"], ids=lambda b: b.id
)
def test_haproxy_blocks_pass_haproxy_c(block: Block, tmp_path: Path, ca: trustme.CA) -> None:
    """Each HAProxy snippet passes `haproxy -c`, with its certificate files generated."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")
    server = ca.issue_cert("www.example.com")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(server.private_key_and_cert_chain_pem.bytes())
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    def local(found: re.Match[str]) -> str:
        target = bundle if found.group(1).startswith("crt") else tmp_path / "ca.pem"
        return f"{found.group(1)}{target}"

    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_FILES.sub(local, block.text), encoding="utf-8")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
