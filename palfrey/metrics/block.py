"""A block: one process's metrics in shared memory (an anonymous memfd, mapped shared).

The process that serves `/metrics` creates one block per serving process and keeps it
mapped; the serving process maps the same memory and increments its slots in place. A
block outlives the process writing it (the supervisor still holds it), which is what
keeps a killed worker's counts; and it crosses exec (a single process's reload) and
worker spawn as an inherited file descriptor. memfd needs no file system, so read-only
containers work and nothing is left behind if the supervisor itself is killed; where
there is no memfd, an unlinked temporary file does the same job.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import weakref
from typing import Any

from palfrey.metrics.layout import Layout

__all__ = ["HANDOFF_ENV", "Block", "adopt_handoff"]

_MAGIC = b"PLFYMTR1"
_HEADER = struct.Struct("<8sQQQ")  # magic, layout signature, pid of the writer, reserved
HANDOFF_ENV = "_PALFREY_METRICS"
"""Set across a single process's re-exec: "fd:signature" of its block."""


class Block:
    """Float slots (`values`, a memoryview of float64) laid out by `layout`."""

    def __init__(self, layout: Layout, fd: int | None = None, *, fresh: bool = True) -> None:
        self.layout = layout
        self.fd = _anonymous_fd() if fd is None else fd
        # The descriptor is closed by close(), or when the block is garbage collected.
        self._release_fd = weakref.finalize(self, _close_quietly, self.fd)
        size = _HEADER.size + 8 * layout.size
        if fresh:
            os.ftruncate(self.fd, size)
        self._map = mmap.mmap(self.fd, size)
        if fresh:
            _HEADER.pack_into(self._map, 0, _MAGIC, layout.signature, os.getpid(), 0)
        self.values = memoryview(self._map)[_HEADER.size :].cast("d")

    @property
    def pid(self) -> int:
        """The process that last claimed the block (`claim`)."""
        return int(_HEADER.unpack_from(self._map, 0)[2])

    def claim(self) -> None:
        """Record this process as the block's writer."""
        _HEADER.pack_into(self._map, 0, _MAGIC, self.layout.signature, os.getpid(), 0)

    def add_counters(self, other: Block) -> None:
        """Add `other`'s counters into this block (a retired worker's totals)."""
        mine, theirs = self.values, other.values
        for index in range(self.layout.counters):
            value = theirs[index]
            if value:
                mine[index] += value

    def close(self) -> None:
        values = self.values
        if values is None:
            return
        self.values = None  # type: ignore[assignment]
        values.release()
        self._map.close()
        self._release_fd()

    # -- crossing a process boundary ---------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        # multiprocessing (spawn) passes the descriptor to the child as it does sockets.
        from multiprocessing.reduction import DupFd

        return (_attach, (DupFd(self.fd), self.layout))

    def handoff_env(self) -> dict[str, str]:
        """The environment entry through which a re-executed image adopts this block (a
        duplicate descriptor, inherited across exec)."""
        fd = os.dup(self.fd)
        os.set_inheritable(fd, True)
        return {HANDOFF_ENV: f"{fd}:{self.layout.signature}"}


def _attach(dup: Any, layout: Layout) -> Block:
    block = Block(layout, dup.detach(), fresh=False)
    block.claim()  # in the worker: the event-loop lag gauge is labelled with its pid
    return block


def adopt_handoff(environ: Any, layout: Layout) -> Block | None:
    """The block handed over across a re-exec, if its layout is `layout` (different
    histogram buckets start from zero: the old counts cannot be re-bucketed). Removes the
    variable."""
    raw = environ.pop(HANDOFF_ENV, "")
    fd_text, _, signature = raw.partition(":")
    if not fd_text.isdigit():
        return None
    fd = int(fd_text)
    if signature != str(layout.signature):
        _close_quietly(fd)
        return None
    try:
        os.set_inheritable(fd, False)
        block = Block(layout, fd, fresh=False)
    except (OSError, ValueError):
        _close_quietly(fd)
        return None
    if bytes(block._map[:8]) != _MAGIC:
        block.close()
        return None
    block.claim()
    return block


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _anonymous_fd() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("palfrey-metrics", os.MFD_CLOEXEC)
    import tempfile

    fd, path = tempfile.mkstemp(prefix="palfrey-metrics-")
    os.unlink(path)
    return fd
