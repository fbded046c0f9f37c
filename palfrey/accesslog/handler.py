"""The access log's handler: a destination (stdout, stderr, a file) that can be reopened,
and a queue of whole lines written once per event-loop turn.

Configured by name in the default logging config ("palfrey.logging.AccessHandler", which
re-exports this class) and usable in a logging config of your own.
"""

from __future__ import annotations

import logging
import os
import select
import sys
from typing import Any, TextIO

__all__ = ["AccessHandler"]


class AccessHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The access log's destination: "stdout", "stderr" or a file (appended to, created
    if missing), reopened by `reopen()` (SIGUSR1, after logrotate moved the file).

    Besides `emit`, it takes whole lines written directly (`write_line`) and writes them
    once per event-loop turn (palfrey.accesslog.sink), whole lines per write, so lines of
    several workers sharing a pipe never interleave mid-line (POSIX: writes up to
    PIPE_BUF bytes to a pipe are atomic).
    """

    def __init__(self, destination: str = "stdout") -> None:
        self.destination = destination
        super().__init__(self._open())
        self.pending: list[str] = []
        self._loop: Any = None

    def _open(self) -> TextIO:
        if self.destination == "stdout":
            return sys.stdout
        if self.destination == "stderr":
            return sys.stderr
        return open(self.destination, "a", encoding="utf-8")

    def reopen(self) -> None:
        """Write what is pending, close a file destination and open its path again."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            if self.destination in ("stdout", "stderr"):
                self.stream = self._open()
                return
            old = self.stream
            self.stream = self._open()
            old.close()

    def write_line(self, line: str) -> None:
        """Queue one line (without its newline) for the end of this event-loop turn."""
        pending = self.pending
        pending.append(line)
        if len(pending) == 1:
            loop = self._loop
            if loop is None:
                self.flush()
            else:
                loop.call_soon(self.flush)

    def bind_loop(self, loop: Any) -> None:
        """Write queued lines on `loop` (None: at once)."""
        self._loop = loop

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            super().flush()

    def _write_pending(self) -> None:
        pending = self.pending
        if not pending:
            return
        text = "\n".join(pending) + "\n"
        pending.clear()  # in place: the access log's write path holds this list
        stream = self.stream
        try:
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                stream.write(text)  # not a file (a test's capture buffer)
                return
            stream.flush()  # what print() left in the stream's buffer goes first
            _write_whole_lines(fd, text.encode("utf-8", "backslashreplace"))
        except OSError:
            # A full disk, a closed pipe: reported as logging reports a failing handler
            # (a traceback on stderr), and serving goes on.
            self.handleError(logging.makeLogRecord({"msg": "access log lines", "args": ()}))

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            if self.destination not in ("stdout", "stderr"):
                self.stream.close()
        super().close()


_PIPE_BUF = 4096


def _write_whole_lines(fd: int, data: bytes) -> None:
    """Write `data` (whole lines) to `fd` in pieces of at most PIPE_BUF bytes that end at
    a line break (a longer single line goes alone)."""
    start, end = 0, len(data)
    while start < end:
        stop = end
        if stop - start > _PIPE_BUF:
            cut = data.rfind(b"\n", start, start + _PIPE_BUF)
            stop = cut + 1 if cut >= start else data.find(b"\n", start) + 1 or end
        view = memoryview(data)[start:stop]
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:  # a pipe someone made non-blocking: wait, as a
                select.select([], [fd], [])  # blocking stream would
                continue
            view = view[written:]
        start = stop
