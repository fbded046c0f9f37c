"""What every benchmark script reads from the OS: a free loopback port and the CPU time of
a process tree (server CPU per request is the figure that survives a busy machine)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (granian and supervisors run children)."""
    pids: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{current}/task/{task}/children").read_text()
                    stack.extend(int(child) for child in children.split())
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree rooted at ``pid``, in seconds."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{member}/stat").read_text()
            # Fields after the command name (which may contain spaces) start at field 3.
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


def rss_kib(pid: int) -> int:
    """Resident memory (VmRSS, KiB) summed over the process tree rooted at ``pid``."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when the harness dies, so a
    killed benchmark leaves no server or load generator behind."""
    parent = os.getpid()

    def preexec() -> None:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the harness died before prctl took effect
            os._exit(1)

    return preexec
