"""Development auto-reload (`--reload`): notice source changes and restart the worker.

Uses watchfiles when it is installed (the "standard" extra) and polls modification times
otherwise. `reload.dirs` (default: the current directory), `reload.includes` (default
"*.py") and `reload.excludes` (default ".*", ".py[cod]", ".sw.*", "~*") are glob
patterns matched against file names and, for patterns with a "/", against the path
relative to the watched directory; `reload.delay` batches changes (and is the polling
interval). The supervisor restarts the worker as a rolling replacement: when the new
code does not import, the error is logged and the old process keeps serving.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from palfrey.plan import registry
from palfrey.plan.plan import ReloadPlan

__all__ = ["DEFAULT_EXCLUDES", "DEFAULT_INCLUDES", "ChangeWatcher", "PathFilter"]

logger = logging.getLogger("palfrey.error")

DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", ".tox"}


class PathFilter:
    """Which paths count as source changes."""

    def __init__(self, section: ReloadPlan, roots: list[Path]) -> None:
        self.includes = (*DEFAULT_INCLUDES, *section.includes)
        self.excludes = (*DEFAULT_EXCLUDES, *section.excludes)
        self.roots = roots

    def _matches(self, path: Path, patterns: tuple[str, ...]) -> bool:
        for pattern in patterns:
            if fnmatch.fnmatch(path.name, pattern):
                return True
            if "/" in pattern or os.sep in pattern:
                for root in self.roots:
                    try:
                        relative = path.relative_to(root)
                    except ValueError:
                        continue
                    if fnmatch.fnmatch(str(relative), pattern):
                        return True
        return False

    def __call__(self, path: Path) -> bool:
        if any(part in _SKIP_DIRS for part in path.parts):
            return False
        return self._matches(path, self.includes) and not self._matches(path, self.excludes)


class ChangeWatcher:
    """`async for changes in ChangeWatcher(section).changes()`: sets of changed paths."""

    def __init__(self, section: ReloadPlan, *, force_polling: bool = False) -> None:
        self.section = section
        self.roots = [Path(d).resolve() for d in (section.dirs or (os.getcwd(),))]
        self.accept = PathFilter(section, self.roots)
        self.polling = force_polling or not registry.installed("watchfiles")

    def changes(self) -> AsyncIterator[set[Path]]:
        where = ", ".join(str(root) for root in self.roots)
        kind = "polling" if self.polling else "WatchFiles"
        logger.info("Will watch for changes in these directories: %s (%s)", where, kind)
        return self._poll() if self.polling else self._watchfiles()

    async def _watchfiles(self) -> AsyncIterator[set[Path]]:
        import watchfiles

        delay_ms = int(self.section.delay * 1000)

        def accept(_change: object, path: str) -> bool:
            return self.accept(Path(path))

        async for batch in watchfiles.awatch(
            *self.roots, watch_filter=accept, debounce=max(delay_ms, 50), step=50
        ):
            paths = {Path(path) for _change, path in batch}
            if paths:
                yield paths

    async def _poll(self) -> AsyncIterator[set[Path]]:
        seen = dict(self._scan())
        while True:
            await asyncio.sleep(max(self.section.delay, 0.05))
            now = dict(self._scan())
            changed = {path for path, mtime in now.items() if seen.get(path) != mtime}
            changed |= set(seen) - set(now)
            seen = now
            if changed:
                yield changed

    def _scan(self) -> Iterator[tuple[Path, int]]:
        for root in self.roots:
            for directory, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
                for name in files:
                    path = Path(directory, name)
                    if not self.accept(path):
                        continue
                    try:
                        yield path, path.stat().st_mtime_ns
                    except OSError:
                        continue
