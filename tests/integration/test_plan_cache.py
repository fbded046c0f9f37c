"""The plan cache, black-box: `palfrey` run twice as a user runs it.

Whether a start validated is read two ways, neither of them a timing: the debug log line
naming the cache's verdict, and a sitecustomize module that records every process that
imports pydantic (the validating child, a supervisor, a worker) in a marker file. A
start served from the cache leaves the marker empty: pydantic is imported by no process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.process import PalfreyProcess, clean_env

PALFREY = str(Path(sys.executable).parent / "palfrey")

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""

# Records, in $PYDANTIC_MARKER, the pid of every process that imports pydantic: its
# module runs (locating it, as the plan cache's key does, is no import).
SITECUSTOMIZE = """
import importlib.machinery, os, sys

class _Watch:
    def find_spec(self, name, path=None, target=None):
        marker = os.environ.get("PYDANTIC_MARKER")
        if not marker or name != "pydantic":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            with open(marker, "a") as file:
                file.write(f"{os.getpid()}\\n")
            run(module)

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Watch())
"""

HIT = "Configuration: plan cache: hit"
VALIDATED = "; validated"


class Site:
    """A project directory with an app and a manifest, its own plan cache and marker."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "app.py").write_text(APP)
        hooks = root / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.manifest = root / "palfrey.toml"
        self.manifest.write_text('app = "app:app"\n[server]\nport = 0\nheaders = ["X-Test: a"]\n')
        self.marker = root / "pydantic-imports"
        self.cache = root / "cache"
        self.env = {
            "PYTHONPATH": str(hooks),
            "PYDANTIC_MARKER": str(self.marker),
            "XDG_CACHE_HOME": str(self.cache),
        }

    @property
    def plans(self) -> Path:
        return self.cache / "palfrey" / "plans"

    def entries(self) -> list[Path]:
        return sorted(self.plans.glob("*.plan")) if self.plans.is_dir() else []

    def importers(self) -> list[str]:
        """Pids that imported pydantic since the last call."""
        if not self.marker.exists():
            return []
        pids = self.marker.read_text().split()
        self.marker.unlink()
        return pids

    def start(self, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
        """Run `palfrey --config palfrey.toml ARGS` until it answers; (log, X-Test header)."""
        command = ["--config", "palfrey.toml", "--log-level", "debug", *args]
        with PalfreyProcess(command, cwd=self.root, env={**self.env, **(env or {})}) as proc:
            response = proc.wait_until_serving()
            assert response.status_code == 200
            proc.signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            return proc.log, response.headers.get("x-test", "")

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PALFREY, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
            env=clean_env({**self.env, **(env or {})}),
            check=False,
        )


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
def test_a_second_start_with_the_same_inputs_loads_no_pydantic(
    site: Site, workers: list[str]
) -> None:
    log, _ = site.start(*workers)
    assert "plan cache: no entry; validated" in log
    assert len(site.importers()) == 1  # the validating child, and no other process
    [entry] = site.entries()
    assert entry.stat().st_mode & 0o777 == 0o600
    assert site.plans.stat().st_mode & 0o777 == 0o700

    log, header = site.start(*workers)
    assert HIT in log
    assert VALIDATED not in log
    assert site.importers() == []  # not the server, not the supervisor, not a worker
    assert header == "a"  # and what it serves is the configuration's


def _edit_manifest(site: Site) -> dict[str, str]:
    site.manifest.write_text(site.manifest.read_text().replace("X-Test: a", "X-Test: b"))
    return {}


def _set_env(site: Site) -> dict[str, str]:
    return {"PALFREY_SERVER__HEADERS": '["X-Test: b"]'}


def _add_env_file(site: Site) -> dict[str, str]:
    (site.root / "app.env").write_text('PALFREY_SERVER__HEADERS=["X-Test: b"]\n')
    return {"PALFREY_ENV_FILE": "app.env"}


@pytest.mark.parametrize("change", [_edit_manifest, _set_env, _add_env_file])
def test_a_changed_input_is_validated_and_served(site: Site, change: object) -> None:
    assert callable(change)
    site.start()
    site.importers()
    env = change(site)
    log, header = site.start(env=env)
    assert VALIDATED in log
    assert HIT not in log
    assert site.importers() != []
    assert header == "b"


def test_one_byte_of_the_env_file_and_a_flag_each_miss(site: Site) -> None:
    env_file = site.root / "app.env"
    env_file.write_text('PALFREY_SERVER__HEADERS=["X-Test: c"]\n')
    env = {"PALFREY_ENV_FILE": "app.env"}
    site.start(env=env)
    assert HIT in site.start(env=env)[0]
    env_file.write_text('PALFREY_SERVER__HEADERS=["X-Test: d"]\n')  # one byte differs
    log, header = site.start(env=env)
    assert (VALIDATED in log, header) == (True, "d")
    log, header = site.start("--header", "X-Test: e", env=env)
    assert (VALIDATED in log, header) == (True, "e")
    # A file's bytes are checked inside the entry of its command line and environment:
    # the edited env file replaced that entry; the flag made a second one.
    assert len(site.entries()) == 2


def test_a_file_someone_else_could_have_written_is_ignored(site: Site) -> None:
    site.start()
    [entry] = site.entries()
    entry.chmod(0o606)
    log, _ = site.start()
    assert "is writable by group or others (-rw----rw-)" in log
    assert VALIDATED in log
    # The validating start replaces it with a file of its own, which the next start uses.
    assert entry.stat().st_mode & 0o777 == 0o600
    assert HIT in site.start()[0]
    site.plans.chmod(0o777)
    log, _ = site.start()
    assert f"{site.plans} is writable by group or others" in log
    assert VALIDATED in log


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_file_owned_by_another_user_is_ignored(site: Site) -> None:
    site.start()
    [entry] = site.entries()
    os.chown(entry, 65534, 65534)
    log, _ = site.start()
    assert "is owned by uid 65534" in log
    assert VALIDATED in log


def test_a_corrupt_entry_falls_back_to_validation(site: Site) -> None:
    site.start()
    [entry] = site.entries()
    entry.write_bytes(entry.read_bytes()[:100])
    log, header = site.start()
    assert "plan cache: ignored: unreadable" in log
    assert (VALIDATED in log, header) == (True, "a")
    assert HIT in site.start()[0]  # rewritten whole


@pytest.mark.parametrize(
    "switch",
    [["--no-plan-cache"], ["env"], ["manifest"]],
    ids=["flag", "env", "manifest"],
)
def test_the_cache_can_be_turned_off(site: Site, switch: list[str]) -> None:
    env = {}
    args: list[str] = []
    if switch == ["env"]:
        env["PALFREY_SERVER__PLAN_CACHE"] = "false"
    elif switch == ["manifest"]:
        site.manifest.write_text(site.manifest.read_text() + "plan_cache = false\n")
    else:
        args = switch
    for _ in range(2):
        log, _header = site.start(*args, env=env)
        assert VALIDATED in log
        assert site.importers() != []
    assert site.entries() == []


def test_an_invalid_configuration_is_reported_on_every_start(site: Site) -> None:
    site.start()
    good = site.manifest.read_text()
    site.manifest.write_text(good.replace("port = 0", "port = 0\nbacklog = 0"))
    for _ in range(2):
        result = site.run("--config", "palfrey.toml")
        assert result.returncode == 2
        assert "palfrey.toml:4: 'server.backlog'" in result.stderr
    assert len(site.entries()) == 1  # only the valid configuration's
    site.manifest.write_text(good)
    assert HIT in site.start()[0]  # the same bytes as before: the same plan


def test_check_config_warms_the_start_it_checks(site: Site) -> None:
    result = site.run("--check-config", "--config", "palfrey.toml", "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert len(site.entries()) == 1
    site.importers()
    log, header = site.start()
    assert HIT in log
    assert site.importers() == []
    assert header == "a"


def test_a_secrets_directory_is_never_cached(site: Site) -> None:
    secrets = site.root / "secrets"
    secrets.mkdir()
    (secrets / "PALFREY_SERVER__BACKLOG").write_text("64\n")
    for _ in range(2):
        log, _ = site.start("--secrets-dir", "secrets")
        assert VALIDATED in log
    assert site.entries() == []


def test_warnings_are_repeated_by_a_cached_start(site: Site) -> None:
    env = {"PALFREY_WROKERS": "2"}
    site.start(env=env)
    log, _ = site.start(env=env)
    assert HIT in log
    assert "PALFREY_WROKERS is not a Palfrey setting and is ignored" in log


def test_a_reload_of_a_cached_start_validates_and_keeps_serving_on_errors(site: Site) -> None:
    site.start()
    site.importers()
    args = ["--config", "palfrey.toml", "--log-level", "debug"]
    with PalfreyProcess(args, cwd=site.root, env=site.env) as proc:
        assert proc.wait_until_serving().headers["x-test"] == "a"
        proc.wait_for_log(HIT)
        good = site.manifest.read_text()
        site.manifest.write_text(good + "[server.bogus]\n")
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("Reload failed, keeping the current configuration")
        assert httpx.get(proc.url, timeout=5).headers["x-test"] == "a"
        site.manifest.write_text(good.replace("X-Test: a", "X-Test: b"))
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("Restarting in place")
        deadline = time.monotonic() + 15
        header = ""
        while header != "b" and time.monotonic() < deadline:
            try:
                header = httpx.get(proc.url, timeout=5).headers.get("x-test", "")
            except httpx.TransportError:
                time.sleep(0.05)
        assert header == "b"
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert site.importers() != []  # each reload validated


def test_systemd_sockets_are_served_whether_validated_or_cached(site: Site) -> None:
    """systemd passes listening sockets from fd 3 to the process it starts, named by
    LISTEN_PID. The validating child plans on that process's behalf, and a cached plan
    (LISTEN_PID differs at every start, it names the new process each time) does too."""
    # No host or port in the manifest: those would take precedence over systemd's sockets.
    site.manifest.write_text('app = "app:app"\n[server]\nheaders = ["X-Test: a"]\n')
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    env = clean_env({**site.env, "LISTEN_FDS": "1"})
    # As systemd does: LISTEN_PID is the pid of the process that runs palfrey.
    command = ["sh", "-c", 'export LISTEN_PID=$$; exec "$0" "$@"', PALFREY]
    command += ["--config", "palfrey.toml", "--log-level", "debug"]
    try:
        for verdict in (VALIDATED, HIT):
            proc = subprocess.Popen(
                command,
                cwd=site.root,
                env=env,
                pass_fds=(3,),
                preexec_fn=lambda: (os.dup2(fd, 3), None)[1],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                assert _get(f"http://127.0.0.1:{port}/").headers["x-test"] == "a"
            finally:
                proc.terminate()
                log = proc.communicate(timeout=20)[0]
            assert f"running on http://127.0.0.1:{port}" in log
            assert verdict in log
    finally:
        listener.close()


def _get(url: str) -> httpx.Response:
    deadline = time.monotonic() + 15
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
