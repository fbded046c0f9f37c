"""h2spec (github.com/summerwind/h2spec), the HTTP/2 conformance suite, in strict mode
against the `palfrey` command: cleartext prior knowledge and TLS (ALPN h2), three runs
each, every case must pass (a case that passes only sometimes is a race).

`.ci/run` builds the binary with `../shared/tools/build-h2spec.sh` into `.tools/h2spec`;
elsewhere set H2SPEC_BIN to a binary, or the test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.helpers.process import ROOT, PalfreyProcess

H2SPEC = os.environ.get("H2SPEC_BIN") or (
    str(ROOT / ".tools" / "h2spec") if (ROOT / ".tools" / "h2spec").exists() else None
)
H2SPEC = H2SPEC or shutil.which("h2spec")
RUNS = 3
_SUMMARY = re.compile(r"(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed")

pytestmark = [
    pytest.mark.skipif(H2SPEC is None, reason="h2spec is not built (see the module docstring)"),
    pytest.mark.slow,
]

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("h2spec")
    (path / "h2app.py").write_text(APP)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(path / "cert.pem")
    return path


def _serve(folder: Path, *extra: str) -> PalfreyProcess:
    args = ["h2app:app", "--port", "0", "--http", "h2", "--no-access-log", "--lifespan", "off"]
    return PalfreyProcess([*args, *extra], cwd=folder)


@pytest.fixture(scope="module")
def cleartext(folder: Path) -> Iterator[int]:
    with _serve(folder) as proc:
        yield proc.wait_for_port()


@pytest.fixture(scope="module")
def tls(folder: Path) -> Iterator[int]:
    with _serve(folder, "--ssl-certfile", str(folder / "cert.pem")) as proc:
        yield proc.wait_for_port()


def _h2spec(port: int, *extra: str) -> str:
    assert H2SPEC is not None
    argv = [H2SPEC, "--strict", "-h", "127.0.0.1", "-p", str(port), "-o", "3", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return done.stdout + done.stderr


def _assert_all_passed(output: str) -> None:
    summary = _SUMMARY.search(output)
    assert summary is not None, output[-2000:]
    total, passed, skipped, failed = map(int, summary.groups())
    failures = output[output.find("Failures:") :] if "Failures:" in output else ""
    assert (failed, skipped, passed) == (0, 0, total), failures[-4000:]
    assert total >= 146


@pytest.mark.parametrize("run", range(RUNS))
def test_h2spec_cleartext_prior_knowledge(cleartext: int, run: int) -> None:
    _assert_all_passed(_h2spec(cleartext))


@pytest.mark.parametrize("run", range(RUNS))
def test_h2spec_tls(tls: int, run: int) -> None:
    _assert_all_passed(_h2spec(tls, "-t", "-k"))
