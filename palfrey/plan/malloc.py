"""C allocator tuning for a serving process (`server.malloc_top_pad` and
`server.malloc_mmap_threshold`).

Only glibc is tuned: other C libraries (musl, macOS) have no such knobs. A knob the
operator set in the environment (MALLOC_TOP_PAD_, MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_, or the same name in GLIBC_TUNABLES) is their choice and wins.

Why both are set is in docs/explanation/allocator.md. In short: glibc serves a block of
at least M_MMAP_THRESHOLD bytes that does not fit the heap with a fresh mmap and returns
it with munmap on free. The threshold starts at 128 KiB and glibc raises it by itself
when such a block is freed, but setting any of M_TOP_PAD, M_MMAP_THRESHOLD or
M_TRIM_THRESHOLD (by mallopt or the environment) stops that adjustment for good. Every
TLS read allocates a 256 KiB buffer (uvloop and asyncio both ask `SSLObject.read()` for
that much), so with the threshold left at 128 KiB each read cost an mmap, an mremap, an
munmap and fresh page faults.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

logger = logging.getLogger("palfrey.error")


def glibc() -> bool:
    """Whether this process runs on glibc."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # not POSIX, or not a glibc name
        return False


def operator_set(name: str, environ: Mapping[str, str]) -> bool:
    """Whether the environment sets glibc's malloc knob `name` ("top_pad", ...): as
    MALLOC_<NAME>_ or as glibc.malloc.<name> in GLIBC_TUNABLES (glibc 2.26+)."""
    if f"MALLOC_{name.upper()}_" in environ:
        return True
    tunables = environ.get("GLIBC_TUNABLES", "").split(":")
    return any(item.startswith(f"glibc.malloc.{name}=") for item in tunables)


def _mallopt() -> Callable[[int, int], int] | None:
    import ctypes  # only here: it costs a serving process that skips this ~0.4 MiB

    try:
        mallopt: Callable[[int, int], int] = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always exports it
        return None
    return mallopt


def apply_top_pad(pad: int | None, environ: Mapping[str, str] | None = None) -> bool:
    """Set glibc's M_TOP_PAD to `pad` bytes; True when it was set."""
    environ = os.environ if environ is None else environ
    if not pad or operator_set("top_pad", environ) or not glibc():
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_TOP_PAD, int(pad)))


def apply_mmap_threshold(threshold: int | None, environ: Mapping[str, str] | None = None) -> bool:
    """Set glibc's M_MMAP_THRESHOLD to `threshold` bytes and M_TRIM_THRESHOLD to twice
    that; True when the threshold was set.

    Twice is the pair glibc's own adjustment picks when it raises the threshold: without
    it the trim threshold stays at 128 KiB, and with `malloc_top_pad` at "none" every
    buffer freed into the top of the heap was handed back with brk and faulted in again.
    """
    environ = os.environ if environ is None else environ
    if not threshold or operator_set("mmap_threshold", environ) or not glibc():
        return False
    mallopt = _mallopt()
    if mallopt is None:  # pragma: no cover - glibc always exports it
        return False
    if not mallopt(M_MMAP_THRESHOLD, int(threshold)):
        # glibc refuses more than half its largest heap (32 MiB on 64-bit, 16 on 32-bit).
        message = "server.malloc_mmap_threshold = %d was refused by the C library"
        logger.warning(message + "; its default is kept", threshold)
        return False
    if not operator_set("trim_threshold", environ):
        mallopt(M_TRIM_THRESHOLD, 2 * int(threshold))
    return True
