"""`server.malloc_top_pad` and `server.malloc_mmap_threshold`: glibc's M_TOP_PAD,
M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, set once a server starts. The serving process's
behaviour under TLS load is in tests/integration/test_malloc_tls.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from palfrey.plan import malloc
from tests.helpers.server import run_server

GLIBC = malloc.glibc()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_top_pad_is_set_through_mallopt() -> None:
    assert malloc.apply_top_pad(4 << 20, environ={}) is True
    # glibc accepts any size, the default 128 KiB included.
    assert malloc.apply_top_pad(128 * 1024, environ={}) is True


def test_top_pad_left_alone() -> None:
    assert malloc.apply_top_pad(None, environ={}) is False  # "none"
    assert malloc.apply_top_pad(0, environ={}) is False
    # The operator's MALLOC_TOP_PAD_ wins over the manifest, as does the glibc tunable.
    assert malloc.apply_top_pad(4 << 20, environ={"MALLOC_TOP_PAD_": "65536"}) is False
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.top_pad=0"}
    assert malloc.apply_top_pad(4 << 20, environ=tunables) is False


def test_mmap_threshold_left_alone() -> None:
    assert malloc.apply_mmap_threshold(None, environ={}) is False  # "none"
    assert malloc.apply_mmap_threshold(0, environ={}) is False
    environ = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    assert malloc.apply_mmap_threshold(2 << 20, environ=environ) is False
    environ = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    assert malloc.apply_mmap_threshold(2 << 20, environ=environ) is False


def test_operator_set_reads_both_spellings() -> None:
    assert malloc.operator_set("trim_threshold", {"MALLOC_TRIM_THRESHOLD_": "0"})
    assert malloc.operator_set(
        "trim_threshold", {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}
    )
    assert not malloc.operator_set("trim_threshold", {"GLIBC_TUNABLES": "glibc.malloc.top_pad=1"})
    assert not malloc.operator_set("trim_threshold", {"MALLOC_TOP_PAD_": "1"})


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_mallopt() -> None:
        raise AssertionError("mallopt called off glibc")

    monkeypatch.setattr(malloc, "glibc", lambda: False)
    monkeypatch.setattr(malloc, "_mallopt", no_mallopt)
    assert malloc.apply_top_pad(4 << 20, environ={}) is False
    assert malloc.apply_mmap_threshold(2 << 20, environ={}) is False


def test_a_refused_threshold_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Older glibc refuses a threshold above 32 MiB (the config refuses it first); a
    # refusal must not pass silently.
    calls: list[tuple[int, int]] = []

    def refusing(param: int, value: int) -> int:
        calls.append((param, value))
        return 0

    monkeypatch.setattr(malloc, "glibc", lambda: True)
    monkeypatch.setattr(malloc, "_mallopt", lambda: refusing)
    assert malloc.apply_mmap_threshold(2 << 20, environ={}) is False
    assert calls == [(malloc.M_MMAP_THRESHOLD, 2 << 20)]  # no trim threshold without it
    assert "malloc_mmap_threshold = 2097152 was refused" in caplog.text


# Run in a fresh interpreter (the allocator's settings are process-wide): set the
# threshold or not, then allocate 1 MiB, which is more than the young heap has free.
# mallinfo2().hblks counts live mmapped blocks; sbrk(0) is the end of the heap, which a
# trim moves back down.
PROBE = """
import ctypes, json, sys
from palfrey.plan import malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
applied = malloc.apply_mmap_threshold(int(sys.argv[1]) or None)
size = 1 << 20
before, start = libc.mallinfo2(), libc.sbrk(0)
block = libc.malloc(size)
end = libc.sbrk(0)
mapped = libc.mallinfo2().hblks - before.hblks
libc.free(block)
print(json.dumps({"applied": applied, "heap_free": before.fordblks, "mapped": mapped,
                  "grew": end - start, "kept": libc.sbrk(0) == end}))
"""


def probe(threshold: int, **environ: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)],
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["heap_free"] < 1 << 20  # else the block could come from the heap anyway
    return result


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_mmap_threshold_moves_blocks_into_the_heap() -> None:
    # glibc's defaults: a 1 MiB block is a mapping of its own.
    result = probe(0)
    assert (result["applied"], result["mapped"]) == (False, 1)
    # 2 MiB: the block comes from the heap, and freeing it does not trim the heap
    # (trim threshold 4 MiB).
    result = probe(2 << 20)
    assert (result["applied"], result["mapped"], result["kept"]) == (True, 0, True)
    assert result["grew"] > 0


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_mmap_threshold_yields_to_the_environment() -> None:
    result = probe(2 << 20, MALLOC_MMAP_THRESHOLD_="131072")
    assert (result["applied"], result["mapped"]) == (False, 1)
    # The operator's trim threshold stays: the block is handed back when freed.
    result = probe(2 << 20, MALLOC_TRIM_THRESHOLD_="131072")
    assert (result["applied"], result["mapped"], result["kept"]) == (True, 0, False)
    assert result["grew"] > 0


@pytest.mark.parametrize(
    ("name", "setting", "expected"),
    [
        ("malloc_top_pad", None, 4 << 20),
        ("malloc_top_pad", "1MiB", 1 << 20),
        ("malloc_top_pad", "none", None),
        ("malloc_mmap_threshold", None, 2 << 20),
        ("malloc_mmap_threshold", "8MiB", 8 << 20),
        ("malloc_mmap_threshold", "none", None),
    ],
)
def test_server_applies_the_setting_at_startup(
    monkeypatch: pytest.MonkeyPatch, name: str, setting: str | None, expected: int | None
) -> None:
    # Both are recorded, neither applied: the test process's allocator stays as it was
    # (realize imports them from palfrey.plan.malloc when the server starts).
    seen: dict[str, list[Any]] = {"malloc_top_pad": [], "malloc_mmap_threshold": []}
    monkeypatch.setattr(malloc, "apply_top_pad", seen["malloc_top_pad"].append)
    monkeypatch.setattr(malloc, "apply_mmap_threshold", seen["malloc_mmap_threshold"].append)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sections = {} if setting is None else {"server": {name: setting}}
    with run_server(app, **sections) as running:
        assert httpx.get(running.url, timeout=5).text == "ok"
    assert seen[name] == [expected]
