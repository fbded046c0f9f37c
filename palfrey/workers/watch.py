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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from palfrey.config.runtime import TLSSection
    from palfrey.server import Server

__all__ = ["POLL_INTERVAL", "FileWatch", "reload_tls_in_place", "tls_files", "watch_tls"]

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


def tls_files(tls: TLSSection) -> list[Path]:
    """Every file the TLS context is built from."""
    names = (tls.certfile, tls.keyfile, tls.ca_certs, tls.keyfile_password_file)
    return [path for path in names if path is not None]


def reload_tls_in_place(context: ssl.SSLContext, tls: TLSSection) -> None:
    """Load renewed certificate files into the live `context`: new handshakes use them,
    established connections are untouched. Validates first by building a complete new
    context, so a half-written or mismatched pair leaves the old certificate serving.
    Raises TLSConfigError or ssl.SSLError."""
    from palfrey.build import tls as tls_module

    fresh = tls_module.create_ssl_context(tls)
    password = tls_module._password(tls)
    context.load_cert_chain(
        str(tls.certfile),
        str(tls.keyfile) if tls.keyfile is not None else None,
        password=lambda: password or "",
    )
    if tls.ca_certs is not None:
        context.load_verify_locations(cafile=str(tls.ca_certs))
    certs: Any = tls_module._SERVER_CERTS
    if fresh in certs:  # the ASGI `tls` extension's server_cert
        certs[context] = certs[fresh]


async def watch_tls(server: Server, interval: float = POLL_INTERVAL) -> None:
    """Reload `server`'s TLS context whenever its files change (runs until cancelled)."""
    from palfrey.build.tls import TLSConfigError

    tls = server.config.tls
    context = server.ssl_context
    if not tls.enabled or not isinstance(context, ssl.SSLContext):
        return
    watch = FileWatch(tls_files(tls))
    while True:
        await asyncio.sleep(interval)
        if not watch.changed():
            continue
        try:
            reload_tls_in_place(context, tls)
        except (TLSConfigError, ssl.SSLError, OSError) as exc:
            logger.error("TLS files changed but cannot be loaded (%s); keeping the old ones", exc)
        else:
            logger.info("Reloaded the TLS certificate from %s", tls.certfile)
