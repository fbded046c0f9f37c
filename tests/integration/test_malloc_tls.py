"""`server.malloc_mmap_threshold` in a real serving process: Palfrey over TLS under a
bounded load, the allocator's work read from the kernel's count of the process's minor
page faults (/proc/<pid>/stat), no tracer and no timing.

Every TLS read allocates a 256 KiB buffer. Above glibc's mmap threshold that buffer is
a fresh mapping each time, and writing the request into it faults at least one new page
in: about 2 faults per request. Served from the heap, the same pages are reused and a
keep-alive request faults nothing.
"""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest
import trustme

from palfrey.plan.malloc import glibc
from tests.helpers.process import PalfreyProcess

pytestmark = pytest.mark.skipif(not glibc(), reason="glibc only")

CONNECTIONS = 3
ROUNDS = 100  # requests per connection, measured after a warm-up
APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def minor_faults(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[7])  # field 10, minflt


def faults_per_request(tmp_path: Path, args: list[str], env: dict[str, str]) -> float:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    (tmp_path / "hello.py").write_text(APP)
    tls = ["--ssl-certfile", str(tmp_path / "server.pem"), "--no-access-log"]
    with PalfreyProcess(["hello:app", "--port", "0", *tls, *args], cwd=tmp_path, env=env) as proc:
        port = proc.wait_for_port()
        assert proc.proc is not None
        context = ssl.create_default_context()
        ca.configure_trust(context)
        clients = [
            http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
            for _ in range(CONNECTIONS)
        ]

        def load(rounds: int) -> None:
            for _ in range(rounds):
                for client in clients:
                    client.request("GET", "/")
                    assert client.getresponse().read() == b"ok"

        load(20)  # handshakes, first-use allocations
        before = minor_faults(proc.proc.pid)  # the same PID after the in-place exec
        load(ROUNDS)
        faults = minor_faults(proc.proc.pid) - before
        for client in clients:
            client.close()
    return faults / (CONNECTIONS * ROUNDS)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize(
    "top_pad",
    # "none" keeps glibc's small top pad: the heap top is trimmed below the 256 KiB a read
    # needs, so only the threshold keeps reads off mmap.
    ["none", "4MiB"],
)
def test_tls_reads_reuse_heap_pages(tmp_path: Path, loop: str, top_pad: str) -> None:
    args = ["--loop", loop, "--server-malloc-top-pad", top_pad]
    assert faults_per_request(tmp_path, args, {}) < 0.25


def test_glibc_defaults_fault_on_every_tls_read(tmp_path: Path) -> None:
    # "none" for both leaves glibc's defaults: the measure above sees the problem. (On
    # asyncio's loop it shows or not depending on what else sits in the heap; uvloop's
    # heap after start-up reproduces it every time.)
    args = ["--loop", "uvloop", "--server-malloc-top-pad", "none"]
    args += ["--server-malloc-mmap-threshold", "none"]
    assert faults_per_request(tmp_path, args, {}) >= 1


def test_operator_environment_wins(tmp_path: Path) -> None:
    # The operator's glibc settings beat the manifest's (here its defaults).
    env = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TOP_PAD_": "0"}
    assert faults_per_request(tmp_path, ["--loop", "uvloop"], env) >= 1
