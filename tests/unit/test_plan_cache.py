"""The plan cache's parts: what the key leaves out, where entries live, what is never
stored, how many are kept. Black-box start-ups are in tests/integration/test_plan_cache.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from palfrey.config.inputs import Input, digest
from palfrey.plan import cache
from palfrey.plan.cache import KEEP, PlanCache, cache_directory, serving_argv
from palfrey.workers.launch import Launch
from tests.helpers.plans import make_plan


def test_check_config_is_left_out_of_the_key_but_not_after_double_dash() -> None:
    assert serving_argv(["--check-config", "app:app", "--port", "1"]) == ("app:app", "--port", "1")
    assert serving_argv(["app:app", "--", "--check-config"]) == ("app:app", "--", "--check-config")


def test_the_directory_follows_xdg_and_needs_an_absolute_home() -> None:
    assert cache_directory({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/palfrey/plans")
    # A relative XDG_CACHE_HOME is invalid per the specification and ignored.
    assert cache_directory({"XDG_CACHE_HOME": "c", "HOME": "/h"}) == Path("/h/.cache/palfrey/plans")
    assert cache_directory({"HOME": ""}) is None


def test_the_key_covers_what_the_layers_read_and_nothing_per_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def key() -> str:
        found = PlanCache.for_command(["app:app"])
        assert found is not None
        return found.key

    first = key()
    monkeypatch.setenv("HOSTNAME", "pod-7f9c")  # differs per pod, read by no layer
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert key() == first
    for name, value in [
        ("PALFREY_SERVER__BACKLOG", "5"),
        ("UVICORN_PORT", "1"),  # draws a warning, which the entry repeats
        ("WEB_CONCURRENCY", "3"),
        ("FORWARDED_ALLOW_IPS", "*"),
        ("LISTEN_FDS", "1"),
    ]:
        monkeypatch.setenv(name, value)
        assert key() != first, name
        monkeypatch.delenv(name)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert key() != first
    monkeypatch.delenv("LISTEN_PID")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative paths resolve elsewhere
    assert key() != first


def test_a_backend_installed_or_removed_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = cache._modules()
    monkeypatch.setattr(cache, "MODULES", (*cache.MODULES, "palfrey_no_such_backend"))
    after = dict(cache._modules())
    assert after["palfrey_no_such_backend"] == (None, -1, -1)
    assert dict(before)["httptools"][0] is not None


def test_a_plan_holding_a_secret_or_a_secrets_directory_is_not_stored(tmp_path: Path) -> None:
    store = PlanCache(tmp_path, "k")
    plain = Launch(make_plan())
    assert store.remember(plain, (), ())
    assert not store.remember(plain, (Input("/run/secrets", None),), ())
    secret = make_plan(["main:app", "--ssl-certfile", "c.pem", "--ssl-keyfile-password", "pw"])
    assert secret.tls is not None
    assert secret.tls.password is not None
    assert not store.remember(Launch(secret), (), ())


def test_entries_round_trip_and_the_newest_are_kept(tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_bytes(b"[server]\n")
    inputs = (Input(str(manifest), digest(manifest.read_bytes())),)
    launch = Launch(make_plan())
    for number in range(KEEP + 3):
        store = PlanCache(tmp_path / "plans", f"key{number:03}")
        assert store.remember(launch, inputs, ("a warning",))
        store.flush()
        os.utime(store.path, ns=(number * 10**9, number * 10**9))
    kept = sorted(path.name for path in (tmp_path / "plans").iterdir())
    assert kept == [f"key{number:03}.plan" for number in range(3, KEEP + 3)]
    found, warnings, note = PlanCache(tmp_path / "plans", f"key{KEEP + 2:03}").lookup()
    assert (found, warnings) == (launch, ("a warning",))
    assert note.startswith("hit")
    manifest.write_bytes(b"[server]\n ")
    found, _, note = PlanCache(tmp_path / "plans", f"key{KEEP + 2:03}").lookup()
    assert (found, note) == (None, f"{manifest} changed")


def test_an_entry_under_another_key_is_not_used(tmp_path: Path) -> None:
    store = PlanCache(tmp_path, "one")
    store.remember(Launch(make_plan()), (), ())
    store.flush()
    os.rename(store.path, tmp_path / "two.plan")
    assert PlanCache(tmp_path, "two").lookup()[2] == "ignored: stored under another key"


def test_an_unwritable_directory_is_no_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = PlanCache(blocker / "plans", "k")
    store.remember(Launch(make_plan()), (), ())
    store.flush()  # NotADirectoryError, swallowed
    assert PlanCache(blocker / "plans", "k").lookup()[0] is None
