"""The plan cache: a start-up whose every input is unchanged serves the Plan it validated
last time, without loading pydantic at all.

Validating a configuration (importing pydantic, building the models, checking the layers)
costs more than everything else a start-up does. Its result, the Plan, is a pure function
of the inputs listed in `_material` plus the files the layers read (`Resolved.inputs`), so
the `palfrey` command keys the pickled Launch by a digest of those inputs:

- the key: the command line (without `--check-config`, so a check warms the start it
  checks), every environment variable the layers or `plan()` read (PALFREY_*, UVICORN_*,
  WEB_CONCURRENCY, FORWARDED_ALLOW_IPS, LISTEN_FDS and whether LISTEN_PID names this
  process), the working directory (relative paths), Palfrey's version and the size and
  modification time of each of its source files, the interpreter, and where each
  optional backend, pydantic and the manifest parsers are installed (the size and time of
  their module files: "auto" resolves by what is installed);
- inside the entry, the digest of every file read (manifest, env file), checked again
  before the entry is used, and the field layout of the pickled dataclasses.

An entry is stored only for a configuration that validated and planned without error
(an invalid one is reported on every start), never for one that read a secrets
directory or holds a secret value (secrets are not written to disk), and only when
`server.plan_cache` is on. A pickle is code, so an entry is read only from a regular file
owned by this user and writable by no one else, in a directory of the same kind; any
problem reading it means "validate", never a failed start.

This module imports no pydantic: the command looks up the cache before deciding to
validate.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palfrey.config.inputs import Input, digest
from palfrey.plan.layout import layout_of, same_layout
from palfrey.plan.secret import Secret

__all__ = ["KEEP", "PlanCache", "cache_directory", "serving_argv"]

FORMAT = 1
"""Bumped whenever what an entry holds or how the key is made changes."""

KEEP = 32
"""Entries kept per user; the oldest written are removed beyond it."""

ENV_PREFIXES = ("PALFREY_", "UVICORN_")
"""Read by the layers: PALFREY_* are settings, UVICORN_* draw a warning."""

ENV_NAMES = ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "LISTEN_FDS")
"""Read by the platform layer (the first two) and by plan() (systemd socket activation)."""

MODULES = (
    "httptools",
    "uvloop",
    "h11",
    "wsproto",
    "websockets",
    "h2",
    "hpack",
    "aioquic",
    "prometheus_client",
    "pydantic",
    "pydantic_core",
    "yaml",
    "dotenv",
)
"""Whose presence "auto" backends and the checks before serving depend on, and the
libraries that parse and validate the layers."""

_SUFFIX = ".plan"
_ABANDONED = 3600 * 10**9
"""A temporary file this old (ns) was left by a writer that died."""


def serving_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """`argv` without `--check-config`: the start that a check warms."""
    argv = tuple(argv)
    if "--" in argv:
        end = argv.index("--")
        return (*(a for a in argv[:end] if a != "--check-config"), *argv[end:])
    return tuple(a for a in argv if a != "--check-config")


def cache_directory(environ: os._Environ[str] | dict[str, str]) -> Path | None:
    """$XDG_CACHE_HOME/palfrey/plans (an absolute XDG_CACHE_HOME only, per the XDG base
    directory specification), else ~/.cache/palfrey/plans; None without a home."""
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = environ.get("HOME", "")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return Path(base, "palfrey", "plans")


def _file_stamp(path: str | None) -> tuple[str | None, int, int]:
    if path is None:
        return (None, 0, 0)
    try:
        info = os.stat(path)
    except OSError:
        return (path, 0, 0)
    return (path, info.st_mtime_ns, info.st_size)


def _modules() -> tuple[tuple[str, tuple[str | None, int, int]], ...]:
    found = []
    for name in MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = None if spec is None else spec.origin
        found.append((name, _file_stamp(origin) if spec is not None else (None, -1, -1)))
    return tuple(found)


def _sources() -> tuple[tuple[str, int, int], ...]:
    """Each of Palfrey's own source files with its size and modification time: an
    editable install changes code without changing the version."""
    root = Path(__file__).resolve().parents[1]
    found: list[tuple[str, int, int]] = []
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    pending.append(entry.path)
                elif entry.name.endswith(".py"):
                    info = entry.stat()
                    found.append((entry.path, info.st_mtime_ns, info.st_size))
    return tuple(sorted(found))


def _material(argv: tuple[str, ...], environ: dict[str, str] | os._Environ[str]) -> bytes:
    from palfrey._version import __version__

    env = tuple(
        sorted(
            (name, value)
            for name, value in environ.items()
            if name.startswith(ENV_PREFIXES) or name in ENV_NAMES
        )
    )
    # plan() takes systemd's sockets only when LISTEN_PID names the serving process.
    systemd = environ.get("LISTEN_PID") == str(os.getpid())
    return repr(
        (
            FORMAT,
            __version__,
            sys.executable,
            sys.version,
            sys.platform,
            os.getcwd(),
            argv,
            env,
            systemd,
            _modules(),
            _sources(),
        )
    ).encode()


class Untrusted(Exception):
    """A cache file or directory that someone else could have written."""


def _trusted(info: os.stat_result, what: str) -> None:
    if info.st_uid != os.getuid():
        raise Untrusted(f"{what} is owned by uid {info.st_uid}, not {os.getuid()}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Untrusted(f"{what} is writable by group or others ({stat.filemode(info.st_mode)})")


def _read_trusted(path: Path) -> bytes:
    _trusted(os.stat(path.parent), str(path.parent))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Untrusted(f"{path} is not a regular file")
        _trusted(info, str(path))
        return file.read()


def _current(inputs: tuple[tuple[str, str], ...]) -> str | None:
    """The first input file whose bytes changed (None: all as they were)."""
    for path, expected in inputs:
        try:
            data = Path(path).read_bytes()
        except OSError:
            return path
        if digest(data) != expected:
            return path
    return None


def _holds_secret(value: Any) -> bool:
    if isinstance(value, Secret):
        return True
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        return any(_holds_secret(getattr(value, name)) for name in value.__dataclass_fields__)
    if isinstance(value, (tuple, list, frozenset, set)):
        return any(_holds_secret(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_secret(item) for item in value.values())
    return False


@dataclass
class PlanCache:
    """The cache entry of one command line in one environment."""

    directory: Path
    key: str
    _pending: bytes | None = field(default=None, repr=False)

    @classmethod
    def for_command(cls, argv: Sequence[str]) -> PlanCache | None:
        """The entry `palfrey ARGV` would use here and now; None without a cache directory
        (no HOME) or when the inputs cannot be read."""
        directory = cache_directory(os.environ)
        if directory is None:
            return None
        try:
            material = _material(serving_argv(argv), os.environ)
        except OSError:  # the working directory was removed, a source unreadable
            return None
        return cls(directory, digest(material))

    @property
    def path(self) -> Path:
        return self.directory / f"{self.key}{_SUFFIX}"

    def lookup(self) -> tuple[Any, tuple[str, ...], str]:
        """(the stored object or None, the warnings validation printed, what happened)."""
        try:
            data = _read_trusted(self.path)
        except FileNotFoundError:
            return None, (), "no entry"
        except (OSError, Untrusted) as exc:
            return None, (), f"ignored: {exc}"
        try:
            fmt, key, inputs, warnings, layout, payload = pickle.loads(data)
            if fmt != FORMAT:
                return None, (), "ignored: written by another version"
            if key != self.key:
                return None, (), "ignored: stored under another key"
            changed = _current(inputs)
            if changed is not None:
                return None, (), f"{changed} changed"
            if not same_layout(layout):
                return None, (), "ignored: the plan's classes changed"
            return pickle.loads(payload), tuple(warnings), f"hit ({self.path})"
        except Exception as exc:
            return None, (), f"ignored: unreadable ({type(exc).__name__})"

    def remember(self, value: Any, inputs: tuple[Input, ...], warnings: tuple[str, ...]) -> bool:
        """Prepare `value` (the Launch) for storing by `flush`; False when it must not be
        stored (it read a secrets directory or holds a secret value)."""
        if any(item.digest is None for item in inputs) or _holds_secret(value):
            return False
        files = tuple((item.path, item.digest) for item in inputs if item.digest is not None)
        entry = (FORMAT, self.key, files, warnings, layout_of(value), pickle.dumps(value))
        self._pending = pickle.dumps(entry)
        return True

    def flush(self) -> None:
        """Write what `remember` prepared: atomically, then keep the newest KEEP entries.
        Errors (a read-only or full file system, a directory owned by someone else) are
        swallowed: the cache is an optimisation."""
        data, self._pending = self._pending, None
        if data is None:
            return
        try:
            self._write(data)
            self._prune()
        except (OSError, Untrusted):
            pass

    def _write(self, data: bytes) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        _trusted(os.stat(self.directory), str(self.directory))
        temporary = self.directory / f".{self.key}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with open(fd, "wb") as file:
                file.write(data)
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise

    def _prune(self) -> None:
        """Keep the newest KEEP entries; remove what a writer killed mid-write left."""
        entries, stale = [], []
        with os.scandir(self.directory) as found:
            for entry in found:
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                if entry.name.endswith(_SUFFIX):
                    entries.append((mtime, entry.path))
                elif entry.name.endswith(".tmp") and mtime < time.time_ns() - _ABANDONED:
                    stale.append((mtime, entry.path))
        entries.sort(reverse=True)
        for _, path in entries[KEEP:] + stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
