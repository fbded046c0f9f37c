"""Handing a Plan to the process that serves it, so that process never imports pydantic.

pydantic validates the configuration; serving only reads the Plan. Its import, the model
machinery and Palfrey's config models cost about 10 MiB of resident memory and most of
the start-up time, which a server never needs again, so:

- The `palfrey` command forks at start-up (`validate_in_child`). The child reads every
  layer, validates, makes the Plan and sends it back through a pipe, or prints every
  problem and reports its exit code (2); the parent, the process the user started (the
  PID systemd, Docker and the kubelet watch), imports the serving code meanwhile and
  serves the Plan it receives. It never loads pydantic.
- A SIGHUP or manifest change in a single serving process re-reads the configuration in
  that process (loading pydantic then), and a valid reload replaces the process image in
  place (`reexec`: same PID, command line and interpreter flags, listening sockets
  inherited). The Plan travels across the exec in an anonymous file (`launch_env`);
  `palfrey.cli.main()` in the new image finds it (`read_launch`) and serves it.
- Workers (`workers.count > 1`, `--reload`) are spawned with the Plan (palfrey.workers.
  worker); the supervisor, which re-reads the configuration on SIGHUP, keeps pydantic.

`palfrey.run()` and `palfrey.cli.main(argv)` called from Python serve in the calling
process: the caller has loaded pydantic already, and re-running its command line could
start something else.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from palfrey.plan.plan import Plan
    from palfrey.plan.resolve import Reresolver
    from palfrey.workers.sockets import ListenerSet

__all__ = [
    "LAUNCH_ENV",
    "Launch",
    "can_exec",
    "can_fork",
    "launch_env",
    "read_launch",
    "reexec",
    "validate_in_child",
]

LAUNCH_ENV = "_PALFREY_LAUNCH"
"""Set across the exec: the number of an inherited file descriptor holding the pickled
`Launch`. Removed on reading, so the app's own child processes never see it. The leading
underscore keeps it out of the PALFREY_* configuration namespace."""


@dataclass(frozen=True)
class Launch:
    """What a serving process needs: the Plan and how to re-read it on reload (None: a
    reload restarts with the same Plan)."""

    plan: Plan
    reresolve: Reresolver | None = None


# -- start-up: validate in a child, serve in the parent -------------------------------------


def can_fork() -> bool:
    """Whether start-up can validate in a forked child (POSIX)."""
    return hasattr(os, "fork") and os.name == "posix"


def validate_in_child(
    front: Callable[[], Launch | int], then: Callable[[], None] | None = None
) -> Launch | int:
    """Run `front` (read the layers, validate, plan) in a forked child process and return
    what it returned: the Launch to serve, or the exit code of a run that ends there
    (--check-config, --version, a configuration error). The child's output goes straight
    to this process's stdout and stderr. `then` runs in the child once the outcome is
    sent (storing it in the plan cache)."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its outcome is what the tests check
        os.close(read_fd)
        # systemd passed its sockets to the process it started (LISTEN_PID names it,
        # sd_listen_fds(3)); the child plans on that process's behalf, which serves them.
        if os.environ.get("LISTEN_PID") == str(parent):
            os.environ["LISTEN_PID"] = str(os.getpid())
        # Third-party pydantic plugins (found by scanning every installed distribution's
        # entry points) have no business observing the server's own configuration.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        _child(front, write_fd, then)
    os.close(write_fd)
    _warm_up()
    with open(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if data:
        outcome: Launch | int = pickle.loads(data)
        return outcome
    code = os.waitstatus_to_exitcode(status)
    print(f"palfrey: the configuration could not be read (status {code})", file=sys.stderr)
    return 1


def _child(  # pragma: no cover
    front: Callable[[], Launch | int], write_fd: int, then: Callable[[], None] | None
) -> NoReturn:
    code = 1
    try:
        try:
            outcome: Launch | int = front()
        except SystemExit as exc:  # argparse's --help
            outcome = exc.code if isinstance(exc.code, int) else 0
        # What the child printed comes before anything the parent prints next.
        sys.stdout.flush()
        sys.stderr.flush()
        with open(write_fd, "wb") as pipe:
            pipe.write(pickle.dumps(outcome))
        code = 0
        if then is not None:
            then()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
    os._exit(code)


def _warm_up() -> None:
    """Import what every serving process needs while the child validates (on another
    core when there is one): the server and the HTTP/1.1 core, not any backend the Plan
    may not choose."""
    import palfrey.protocols.http11_base
    import palfrey.server  # noqa: F401


# -- across exec (a reload of a single serving process) -------------------------------------


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


def launch_env(launch: Launch) -> dict[str, str]:
    """The environment entry through which the re-executed image finds `launch`."""
    from palfrey._version import __version__
    from palfrey.plan.layout import layout_of

    envelope = (__version__, layout_of(launch), pickle.dumps(launch))
    return {LAUNCH_ENV: str(_anonymous_file(pickle.dumps(envelope)))}


def read_launch(environ: MutableMapping[str, str]) -> Launch | None:
    """The `Launch` handed over across exec, closing its descriptor and removing the
    variable. None when another version of Palfrey wrote it (upgraded in place before a
    reload): the caller then validates the configuration again with this version's rules.
    Raises OSError or ValueError when it is missing or cannot be read."""
    from palfrey._version import __version__
    from palfrey.plan.layout import same_layout

    raw = environ.pop(LAUNCH_ENV, "")
    if not raw.isdigit():
        raise ValueError(f"{LAUNCH_ENV}={raw!r} is not a file descriptor number")
    with open(int(raw), "rb") as file:
        try:
            version, layout, data = pickle.load(file)
            if version != __version__ or not same_layout(layout):
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

    `launch` makes the new image serve that plan without validating it again;
    `listeners` are handed over as inherited file descriptors.
    """
    from palfrey.plan.realize import operator_environ
    from palfrey.workers.sockets import handoff_env

    # The env file's variables are left out: the new image exports its own plan's.
    environ = operator_environ()
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
