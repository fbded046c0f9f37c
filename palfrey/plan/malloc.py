"""C allocator tuning for a serving process (`server.malloc_top_pad`).

Only glibc is tuned: other C libraries (musl, macOS) have no such knob, and an explicit
MALLOC_TOP_PAD_ in the environment is the operator's choice and wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

M_TOP_PAD = -2  # glibc's mallopt parameter number (malloc.h)


def glibc() -> bool:
    """Whether this process runs on glibc."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # not POSIX, or not a glibc name
        return False


def apply_top_pad(pad: int | None, environ: Mapping[str, str] | None = None) -> bool:
    """Set glibc's M_TOP_PAD to `pad` bytes; True when it was set."""
    environ = os.environ if environ is None else environ
    if not pad or "MALLOC_TOP_PAD_" in environ or not glibc():
        return False
    import ctypes  # only here: it costs a serving process that skips this ~0.4 MiB

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always exports it
        return False
    return bool(mallopt(M_TOP_PAD, int(pad)))
