"""From a validated configuration to serving processes, without pydantic.

pydantic validates the configuration; serving only reads it. Its import, the model
machinery and Palfrey's config models cost about 10 MiB of resident memory that a server
never needs again, so every serving process works from the plain copy in
palfrey.config.runtime and never imports pydantic:

- The `palfrey` command (one process, no --reload) validates, reports every problem
  exactly as before (exit code 2), and then replaces itself with `os.execve`: the same
  command line and interpreter flags, the same process id (what systemd, Docker and the
  kubelet watch), but a fresh interpreter. `palfrey.cli.main()` in the new image finds
  the `Launch` this module left in an anonymous file and serves it (`serve_launched`).
- A SIGHUP or manifest change re-reads the configuration in the serving process. That
  imports pydantic, which is fine: a valid reload replaces the process image anyway (the
  same way, with the listening sockets handed over by palfrey.workers.sockets), and an
  invalid one is logged while the old config keeps serving.
- Workers (`workers.count > 1`, `--reload`) are spawned with the runtime copy
  (palfrey.workers.worker); the supervisor, which re-reads the configuration, keeps
  pydantic.

`palfrey.run()` and `palfrey.cli.main(argv)` called from Python serve in the calling
process: the caller has loaded pydantic already, and re-running its command line could
start something else.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from palfrey.config.runtime import RuntimeConfig
from palfrey.exitcodes import EXIT_APP_IMPORT, EXIT_CONFIG, EXIT_LISTENER, fail

if TYPE_CHECKING:
    from palfrey.workers.sockets import ListenerSet

__all__ = [
    "LAUNCH_ENV",
    "Launch",
    "ReloadError",
    "Reresolver",
    "can_exec",
    "export_env_file",
    "launch_env",
    "read_launch",
    "reexec",
    "serve",
    "serve_launched",
]

logger = logging.getLogger("palfrey.error")

LAUNCH_ENV = "_PALFREY_LAUNCH"
"""Set across the exec: the number of an inherited file descriptor holding the pickled
`Launch`. Removed on reading, so the app's own child processes never see it. The leading
underscore keeps it out of the PALFREY_* configuration namespace."""


class ReloadError(Exception):
    """A re-read configuration that cannot be used; `str()` is the whole report."""


@dataclass(frozen=True)
class Reresolver:
    """What SIGHUP runs: every configuration layer again, from the original command line
    (`argv`) or palfrey.run() keywords (`overrides`), with the environment as it is now.

    Picklable (it travels in a `Launch`) and free of pydantic until called: the loader is
    imported at that moment. Raises ReloadError for a configuration that is invalid or
    names a backend that is not installed, the problems `palfrey` reports at startup.
    """

    argv: tuple[str, ...] = ()
    overrides: Mapping[str, Any] | None = None

    def __call__(self) -> RuntimeConfig:
        from palfrey.build.check import missing_backends
        from palfrey.config.loader import ConfigError, resolve
        from palfrey.config.model import to_runtime

        overrides = dict(self.overrides) if self.overrides else None
        try:
            resolved = resolve(list(self.argv), environ=os.environ, overrides=overrides)
        except ConfigError as exc:
            raise ReloadError(exc.render()) from None
        config = to_runtime(resolved.config)
        problems = missing_backends(config)
        if problems:
            raise ReloadError(ConfigError(problems).render())
        for warning in resolved.warnings:
            logger.warning("%s", warning)
        return config


@dataclass(frozen=True)
class Launch:
    """What a serving process image needs: the validated config, how to re-read it (None:
    a reload restarts with the same config) and the manifest to watch."""

    config: RuntimeConfig
    reresolve: Reresolver | None = None
    manifest: Path | None = None


def export_env_file(config: RuntimeConfig) -> None:
    """The app sees the env file's variables too; ones already set win (as uvicorn)."""
    if config.env_file is None:
        return
    from dotenv import dotenv_values

    for name, value in dotenv_values(config.env_file).items():
        if value is not None:
            os.environ.setdefault(name, value)


def serve(
    config: RuntimeConfig,
    app: Any | None = None,
    *,
    reresolve: Reresolver | None = None,
    manifest: Path | None = None,
    launched: bool = False,
) -> int:
    """Serve `config` in this process, or supervise workers; return the exit code.

    `launched`: this process image was started by `reexec`, so a reload can re-execute
    straight into the new config (see SingleProcess).
    """
    from palfrey.asgi.app_loading import AppLoadError
    from palfrey.build.listeners import ListenerError
    from palfrey.build.tls import TLSConfigError

    try:
        if config.workers.count > 1 or config.reload.enabled:
            if app is not None:
                return fail(
                    "workers.count > 1 and reload need the app as an import string "
                    '("module:attribute"), not an app object',
                    EXIT_CONFIG,
                )
            from palfrey.workers.supervisor import Supervisor

            supervisor = Supervisor(
                config, reresolve=reresolve, manifest=manifest, dev_reload=config.reload.enabled
            )
            return supervisor.run()
        from palfrey.workers.single import SingleProcess

        single = SingleProcess(
            config, app, reresolve=reresolve, manifest=manifest, launched=launched
        )
        return single.run()
    except AppLoadError as exc:
        return fail(str(exc), EXIT_APP_IMPORT)
    except TLSConfigError as exc:
        return fail(str(exc), EXIT_CONFIG)
    except ListenerError as exc:
        return fail(str(exc), EXIT_LISTENER)


# -- across exec ---------------------------------------------------------------------


def can_exec() -> bool:
    """Whether this process can run its own command line again in place.

    Not on Windows (exec there starts a new process with a new id), and not when the
    command line cannot be run again: an interactive interpreter or a script read from
    stdin (argv[0] "" or "-").
    """
    return os.name == "posix" and bool(sys.executable) and sys.argv[0] not in ("", "-")


def _anonymous_file(data: bytes) -> int:
    """An inheritable file descriptor, positioned at the start, reading `data`.

    A pipe would deadlock once `data` outgrows its buffer (the reader is this same
    process, after exec). memfd needs no writable directory (read-only root file systems
    are common in containers); elsewhere an unlinked temporary file does the same job.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("palfrey-launch", 0)
    else:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="palfrey-launch-")
        os.unlink(path)
    with open(fd, "wb", closefd=False) as file:
        file.write(data)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd


def _fingerprint() -> str:
    """Which code wrote a Launch: the Palfrey version and the field layout of the classes
    pickled in it (slotted dataclasses unpickle by position, so a changed layout would
    silently shift values)."""
    from dataclasses import fields

    from palfrey._version import __version__
    from palfrey.config import runtime
    from palfrey.config.secret import Secret

    classes = [Launch, Reresolver, Secret, *(getattr(runtime, n) for n in runtime.__all__)]
    layout = ";".join(f"{c.__name__}:{','.join(f.name for f in fields(c))}" for c in classes)
    return f"{__version__}|{layout}"


def launch_env(launch: Launch) -> dict[str, str]:
    """The environment entry through which the re-executed image finds `launch`."""
    envelope = (_fingerprint(), pickle.dumps(launch))
    return {LAUNCH_ENV: str(_anonymous_file(pickle.dumps(envelope)))}


def read_launch(environ: MutableMapping[str, str]) -> Launch | None:
    """The `Launch` handed over across exec, closing its descriptor and removing the
    variable. None when another version of Palfrey wrote it (upgraded in place before a
    reload): the caller then validates the configuration again with this version's rules.
    Raises OSError or ValueError when it is missing or cannot be read."""
    raw = environ.pop(LAUNCH_ENV, "")
    if not raw.isdigit():
        raise ValueError(f"{LAUNCH_ENV}={raw!r} is not a file descriptor number")
    with open(int(raw), "rb") as file:
        try:
            fingerprint, data = pickle.load(file)
            if fingerprint != _fingerprint():
                return None
            launch = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable ({exc})") from exc
    if not isinstance(launch, Launch):
        raise ValueError(f"expected a Launch, found {type(launch).__name__}")
    return launch


def reexec(launch: Launch | None = None, listeners: ListenerSet | None = None) -> NoReturn:
    """Replace this process image with its own command line run again (os.execve): same
    process id, same interpreter flags, same visible command line.

    `launch` makes the new image serve that config without validating it again;
    `listeners` are handed over as inherited file descriptors.
    """
    from palfrey.workers.sockets import handoff_env

    environ = dict(os.environ)
    if listeners is not None:
        environ.update(handoff_env(listeners))
    if launch is not None:
        environ.update(launch_env(launch))
    for handler in logging.getLogger().handlers + logging.getLogger("palfrey").handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # sys.orig_argv holds the interpreter's own options (-X, -W, -O, -m ...) as well.
    os.execve(sys.executable, list(sys.orig_argv), environ)


def serve_launched() -> int | None:
    """The serving image's entry point (from palfrey.cli.main): serve the handed-over
    `Launch` and return the exit code; None when it must be validated again (read_launch).
    """
    from palfrey.logging import configure_logging

    try:
        launch = read_launch(os.environ)
    except (OSError, ValueError) as exc:
        return fail(f"cannot read the configuration handed over by exec: {exc}", 1)
    if launch is None:
        return None
    export_env_file(launch.config)
    configure_logging(launch.config.logging)
    return serve(launch.config, reresolve=launch.reresolve, manifest=launch.manifest, launched=True)
