"""The pydantic-free runtime copy of the Config (palfrey.config.runtime), the converter,
and what carries it across exec (palfrey.workers.launch).

The mirror is generated from the model; test_config_artifacts fails when the committed
file is stale. These tests check what the generation and the converter promise."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import ByteSize, SecretStr

from palfrey.config import load_config
from palfrey.config import runtime as rt
from palfrey.config.model import SECTIONS, Config, Section, to_runtime
from palfrey.config.secret import Secret
from palfrey.workers import launch
from palfrey.workers.launch import Launch, ReloadError, Reresolver

FULL = [
    "main:app",
    "--port", "9000",
    "--header", "X-A: 1",
    "--ssl-certfile", "/certs/tls.crt",
    "--ssl-keyfile-password", "hunter2",
    "--limit-max-requests", "10",
    "--http2-initial-window-size", "1MiB",
    "--server-uds-permissions", "660",
]  # fmt: skip
ENVIRON = {
    "PALFREY_LOGGING__DICT_CONFIG": '{"version": 1}',
    "PALFREY_LIMITS__MAX_BODY_SIZE": "1KiB",
}


def _full() -> Config:
    return load_config(FULL, environ=ENVIRON)


def _pairs(model: Section, mirror: Any) -> list[tuple[str, Any, Any]]:
    """(key, model value, mirror value) for every field, sections flattened."""
    found = []
    for name in type(model).model_fields:
        value, copied = getattr(model, name), getattr(mirror, name)
        if isinstance(value, Section):
            found.extend((f"{name}.{key}", a, b) for key, a, b in _pairs(value, copied))
        else:
            found.append((name, value, copied))
    return found


def test_the_mirror_has_the_model_attributes_in_order() -> None:
    for model in [*SECTIONS.values(), Config]:
        twin = rt.RuntimeConfig if model is Config else getattr(rt, model.__name__)
        names = [field.name for field in dataclasses.fields(twin)]
        assert names == [*model.model_fields, "fields_set"], model.__name__
        params = twin.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen
        assert "__slots__" in vars(twin)


def test_to_runtime_copies_every_value_as_a_plain_one() -> None:
    config = _full()
    copy = to_runtime(config)
    for key, value, copied in _pairs(config, copy):
        if isinstance(value, SecretStr):
            assert isinstance(copied, Secret)
            assert copied.get_secret_value() == value.get_secret_value()
        elif isinstance(value, ByteSize):
            assert type(copied) is int
            assert copied == value
        else:
            assert copied == value, key
            assert type(copied) is type(value), key
    assert copy.tls.enabled is config.tls.enabled is True
    assert copy.http2.initial_window_size == 1024 * 1024


def test_fields_set_is_carried_on_every_section() -> None:
    config = _full()
    copy = to_runtime(config)
    assert copy.fields_set == config.model_fields_set
    for name in SECTIONS:
        assert getattr(copy, name).fields_set == getattr(config, name).model_fields_set
    assert {"port", "headers", "uds_permissions"} <= copy.server.fields_set
    assert to_runtime(Config()).server.fields_set == frozenset()


def test_equality_follows_the_model() -> None:
    # pydantic leaves model_fields_set out of equality; so does the mirror.
    explicit = load_config(["main:app", "--port", "8000"], environ={})
    default = load_config(["main:app"], environ={})
    assert explicit == default
    assert to_runtime(explicit) == to_runtime(default)
    assert to_runtime(explicit).server.fields_set != to_runtime(default).server.fields_set
    other = load_config(["main:app", "--port", "8001"], environ={})
    assert to_runtime(other) != to_runtime(default)


def test_frozen_hashable_and_pickles_to_an_equal_object() -> None:
    copy = to_runtime(_full())
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.server.port = 1  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(copy))
    assert again == copy
    assert hash(again) == hash(copy)  # even with an inline logging dict_config
    assert again.server.fields_set == copy.server.fields_set


def test_unpickling_does_not_import_pydantic() -> None:
    code = (
        "import pickle, sys\n"
        "config = pickle.loads(sys.stdin.buffer.read())\n"
        "assert config.tls.keyfile_password.get_secret_value() == 'hunter2'\n"
        "print('pydantic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(to_runtime(_full())),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == b"False"


def test_serving_modules_do_not_import_pydantic() -> None:
    modules = [
        "palfrey.cli",
        "palfrey.server",
        "palfrey.logging",
        "palfrey.build.plan",
        "palfrey.workers.launch",
        "palfrey.workers.single",
        "palfrey.workers.worker",
        "palfrey.workers.supervisor",
        "palfrey.workers.reload",
        "palfrey.protocols.negotiation",
    ]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('pydantic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=True
    )
    assert result.stdout.strip() == b"False"


def test_secret_is_never_printed() -> None:
    secret = to_runtime(_full()).tls.keyfile_password
    assert isinstance(secret, Secret)
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in repr(to_runtime(_full()))
    assert secret == Secret("hunter2")
    assert hash(secret) == hash(Secret("hunter2"))


def test_mirror_types_are_plain() -> None:
    hints = typing.get_type_hints(rt.TLSSection)
    assert hints["keyfile_password"] == Secret | None
    assert typing.get_type_hints(rt.HTTPSection)["max_head_size"] is int
    assert typing.get_type_hints(rt.RuntimeConfig)["server"] is rt.ServerSection


# -- across exec ----------------------------------------------------------------------------


def test_launch_round_trip() -> None:
    sent = Launch(to_runtime(_full()), Reresolver(("main:app",)), Path("palfrey.toml"))
    environ = launch.launch_env(sent)
    fd = int(environ[launch.LAUNCH_ENV])
    assert os.get_inheritable(fd)
    received = launch.read_launch(environ)
    assert received == sent
    assert launch.LAUNCH_ENV not in environ  # the app's child processes do not see it
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # closed once read


def test_launch_without_memfd_uses_an_unlinked_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create", raising=False)
    sent = Launch(to_runtime(Config()))
    assert launch.read_launch(launch.launch_env(sent)) == sent


def test_launch_from_another_version_is_validated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = launch.launch_env(Launch(to_runtime(Config())))
    monkeypatch.setattr(launch, "_fingerprint", lambda: "0.0.0|another layout")
    assert launch.read_launch(environ) is None


def test_unreadable_launch_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a file descriptor"):
        launch.read_launch({launch.LAUNCH_ENV: "x"})
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a pickle")
    fd = os.open(garbage, os.O_RDONLY)
    with pytest.raises(ValueError, match="unreadable"):
        launch.read_launch({launch.LAUNCH_ENV: str(fd)})


def test_reresolver_reads_the_command_line_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALFREY_SERVER__BACKLOG", "64")
    config = Reresolver(("main:app", "--port", "9000"))()
    assert isinstance(config, rt.RuntimeConfig)
    assert (config.server.port, config.server.backlog) == (9000, 64)
    assert Reresolver(overrides={"app": "main:app", "port": 9001})().server.port == 9001
    assert pickle.loads(pickle.dumps(Reresolver(("main:app",)))).argv == ("main:app",)


def test_reresolver_reports_what_startup_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ReloadError, match=r"Invalid configuration \(1 problem\)"):
        Reresolver(("main:app", "--port", "many"))()
    monkeypatch.setattr("palfrey.build.check.installed", lambda module: module != "uvloop")
    with pytest.raises(ReloadError, match="needs the 'uvloop' package"):
        Reresolver(("main:app", "--loop", "uvloop"))()


def test_can_exec_only_a_command_line_that_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/palfrey", "main:app"])
    assert launch.can_exec() is (os.name == "posix")
    for argv0 in ("", "-"):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert not launch.can_exec()
