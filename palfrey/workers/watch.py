"""Noticing that files changed: the manifest (for reload_on_change) and the TLS files
(reloaded in place, without a restart).

Polling `stat()` through symlinks is deliberate: Kubernetes updates a mounted ConfigMap or
Secret by swapping the `..data` symlink to a new timestamped directory, which inotify
watches on the file's old path miss (its inode never changes, it is just unlinked later),
but which changes the resolved path and the inode seen through the link at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from palfrey.server import Server

__all__ = ["POLL_INTERVAL", "FileWatch", "watch_tls"]

logger = logging.getLogger("palfrey.error")

POLL_INTERVAL = 1.0
"""Seconds between checks. The kubelet syncs mounted ConfigMaps every minute or so, and
editors write a file within milliseconds, so a second costs nothing that matters."""

Stamp = tuple[str, int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        info = os.stat(path)  # follows symlinks, ..data included
        return (os.path.realpath(path), info.st_ino, info.st_mtime_ns, info.st_size)
    except OSError:
        return None


class FileWatch:
    """`changed()` is true once each time any of the files has changed since the last
    true answer. A file that is momentarily missing (mid-swap, mid-save) is not a change:
    the answer waits until every file exists again."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = tuple(paths)
        self.last = self._stamps()

    def _stamps(self) -> tuple[Stamp, ...]:
        return tuple(_stamp(path) for path in self.paths)

    def changed(self) -> bool:
        now = self._stamps()
        if now == self.last or any(stamp is None for stamp in now):
            return False
        self.last = now
        return True


async def watch_tls(server: Server, interval: float = POLL_INTERVAL) -> None:
    """Reload `server`'s TLS context whenever its files change (runs until cancelled)."""
    from palfrey.plan.tls import TLSConfigError, reload_in_place

    tls = server.plan.tls
    contexts = [context for context in server.ssl_contexts.values() if context is not None]
    if tls is None or not contexts:
        return
    watch = FileWatch(tls.files())
    while True:
        await asyncio.sleep(interval)
        if not watch.changed():
            continue
        try:
            for context in dict.fromkeys(contexts):
                reload_in_place(context, tls)
        except (TLSConfigError, ssl.SSLError, OSError) as exc:
            logger.error("TLS files changed but cannot be loaded (%s); keeping the old ones", exc)
        else:
            logger.info("Reloaded the TLS certificate from %s", tls.certfile)
