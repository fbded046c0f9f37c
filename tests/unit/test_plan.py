"""plan(config) is pure: the same Config and environment give the same plan; it refuses
what cannot be served; it is the one form that crosses a process boundary."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from palfrey.config import load_config
from palfrey.plan.listeners import ListenerSpec
from palfrey.plan.plan import PlanError, plan
from palfrey.plan.resolve import Reresolver
from palfrey.workers import launch
from palfrey.workers.launch import Launch
from tests.helpers.plans import make_plan

FULL = [
    "main:app",
    "--port", "9000",
    "--header", "X-A: 1",
    "--ssl-certfile", "/certs/tls.crt",
    "--ssl-keyfile-password", "hunter2",
    "--limit-max-requests", "10",
    "--http", "h2",
    "--http2-initial-window-size", "1MiB",
    "--server-uds-permissions", "660",
]  # fmt: skip


def test_defaults() -> None:
    result = make_plan()
    (listener,) = result.listeners
    assert listener.spec == ListenerSpec(kind="tcp", host="127.0.0.1", port=8000)
    assert (listener.tls, listener.alpn) == (None, ())
    assert result.connections.http2 is None
    assert (result.process.workers, result.process.reload, result.process.supervised) == (
        1,
        None,
        False,
    )


def test_settings_objects_carry_the_model_defaults() -> None:
    # The protocol settings objects hold no defaults: every value comes from the model.
    from palfrey.config.model import Config

    config = Config()
    conn = make_plan().connections
    assert conn.limits.max_head_size == config.http.max_head_size
    assert conn.limits.keep_alive == config.timeouts.keep_alive
    assert conn.websocket.max_size == config.websocket.max_size
    assert conn.headers.server_header is config.server.server_header


def test_http2_adds_alpn_and_bind_lists_listeners() -> None:
    result = make_plan(
        ["main:app", "--http", "h2", "--server-bind", "[::1]:9000", "--server-bind", "unix:/a.s"]
    )
    assert [str(listener.spec) for listener in result.listeners] == ["[::1]:9000", "unix:/a.s"]
    assert all(listener.alpn == () for listener in result.listeners)  # cleartext: no ALPN
    assert result.connections.http2 is not None
    assert "HTTP/1.1 + HTTP/2" in result.summary()


def test_tls_listeners_offer_alpn() -> None:
    result = make_plan(["main:app", "--http", "h2", "--ssl-certfile", "/c.pem"])
    (listener,) = result.listeners
    assert listener.tls is not None
    assert listener.alpn == ("h2", "http/1.1")
    assert str(listener).startswith("https://")
    result = make_plan(["main:app", "--ssl-certfile", "/c.pem"])
    assert result.listeners[0].alpn == ("http/1.1",)


def test_systemd_sockets_are_used_when_passed_to_this_process() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid())}
    result = plan(load_config(["main:app"], environ={}), environ=env)
    assert [listener.spec for listener in result.listeners] == [
        ListenerSpec(kind="fd", fd=3),
        ListenerSpec(kind="fd", fd=4),
    ]
    explicit = plan(load_config(["main:app", "--port", "1"], environ={}), environ=env)
    assert explicit.listeners[0].spec == ListenerSpec(kind="tcp", host="127.0.0.1", port=1)


H3 = ["main:app", "--http", "h3", "--ssl-certfile", "/c.pem"]


def test_http3_puts_a_udp_listener_beside_each_tcp_address() -> None:
    result = make_plan(H3, server={"bind": ("127.0.0.1:8443", "[::1]:8443", "unix:/tmp/s.sock")})
    assert [str(q.spec) for q in result.quic] == ["udp:127.0.0.1:8443", "udp:[::1]:8443"]
    assert result.connections.http3 is not None
    assert "HTTP/3" in result.protocols()
    described = "\n".join(result.describe())
    assert "listener: quic://127.0.0.1:8443 (UDP), ALPN h3" in described
    assert 'Alt-Svc: h3=":PORT"; ma=86400' in described
    # http3.port: one UDP port for every TCP listener of an address.
    shared = make_plan(
        H3, server={"bind": ("127.0.0.1:8443", "127.0.0.1:9443")}, http3={"port": 443}
    )
    (only,) = shared.quic
    assert only.spec.port == 443
    assert not only.follow_port
    assert [b.port for b in only.beside] == [8443, 9443]
    # Port 0: the UDP port is whatever the TCP listener gets.
    assert make_plan([*H3, "--port", "0"]).quic[0].follow_port


def test_http3_settings_come_from_the_section() -> None:
    settings = make_plan(
        H3,
        http3={
            "max_concurrent_streams": 7,
            "max_stream_data": "64KiB",
            "alt_svc": False,
            "retry": True,
            "early_data": True,
            "congestion_control": "cubic",
        },
    ).connections.http3
    assert settings is not None
    assert (settings.max_concurrent_streams, settings.max_stream_data) == (7, 65536)
    assert settings.alt_svc_max_age is None
    assert (settings.retry, settings.early_data, settings.congestion_control) == (
        True,
        True,
        "cubic",
    )
    assert make_plan().connections.http3 is None
    assert make_plan().quic == ()


def test_http3_refuses_what_it_cannot_serve() -> None:
    config = load_config([*H3, "--uds", "/tmp/a.sock"], environ={})
    with pytest.raises(PlanError, match="HTTP/3 needs a TCP listener"):
        plan(config, environ={})
    config = load_config([*H3, "--ssl-cert-reqs", "2", "--ssl-ca-certs", "/ca.pem"], environ={})
    with pytest.raises(PlanError, match="cannot ask for client certificates"):
        plan(config, environ={})


def test_logging_level_applies_to_a_custom_config_only_when_set() -> None:
    assert make_plan().logging.level == "info"
    custom = {"dict_config": {"version": 1}}
    assert make_plan(logging=custom).logging.level is None
    assert make_plan(logging={**custom, "level": "debug"}).logging.level == "debug"


def test_plan_is_frozen_hashable_and_pickles_to_an_equal_plan() -> None:
    result = make_plan(FULL)
    assert pickle.loads(pickle.dumps(result)) == result
    assert make_plan(FULL) == result
    assert make_plan(["main:app", "--port", "9001"]) != make_plan(["main:app", "--port", "9002"])
    with pytest.raises(AttributeError):
        result.backlog = 1  # type: ignore[misc]


def test_secrets_are_never_printed() -> None:
    result = make_plan(FULL)
    assert result.tls is not None
    assert result.tls.password is not None
    assert "hunter2" not in repr(result)
    assert result.tls.password.get_secret_value() == "hunter2"


def test_unpickling_a_plan_does_not_import_pydantic() -> None:
    data = pickle.dumps(Launch(make_plan(FULL), Reresolver(("main:app",))))
    code = (
        "import pickle, sys; launch = pickle.loads(sys.stdin.buffer.read()); "
        "assert launch.plan.listeners[0].spec.port == 9000; "
        "import palfrey.server, palfrey.workers.single, palfrey.workers.supervisor; "
        "import palfrey.workers.worker, palfrey.cli; "
        # The secret type lives with the config (plain, no pydantic); nothing else of it.
        "allowed = {'palfrey.config', 'palfrey.plan.secret'}; "
        "bad = sorted(m for m in sys.modules if m.startswith(('pydantic', 'palfrey.config')) "
        "and m not in allowed); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], input=data, check=True, timeout=60)


# -- across exec ----------------------------------------------------------------------------


def test_launch_round_trip() -> None:
    sent = Launch(make_plan(FULL), Reresolver(("main:app",)))
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
    sent = Launch(make_plan())
    assert launch.read_launch(launch.launch_env(sent)) == sent


def test_launch_from_another_version_is_validated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = launch.launch_env(Launch(make_plan()))
    monkeypatch.setattr("palfrey._version.__version__", "0.0.0-other")
    assert launch.read_launch(environ) is None


def test_launch_with_a_changed_class_layout_is_validated_again() -> None:
    environ = launch.launch_env(Launch(make_plan()))
    data = os.read(int(environ[launch.LAUNCH_ENV]), 1 << 20)
    version, layout, pickled = pickle.loads(data)
    layout["palfrey.plan.plan:Plan"] = ("listeners", "a field this code does not have")
    redone = launch._anonymous_file(pickle.dumps((version, layout, pickled)))
    assert launch.read_launch({launch.LAUNCH_ENV: str(redone)}) is None


def test_unreadable_launch_is_an_error(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(ValueError, match="not a file descriptor"):
        launch.read_launch({launch.LAUNCH_ENV: "x"})
    garbage = Path(str(tmp_path)) / "garbage"
    garbage.write_bytes(b"not a pickle")
    fd = os.open(garbage, os.O_RDONLY)
    with pytest.raises(ValueError, match="unreadable"):
        launch.read_launch({launch.LAUNCH_ENV: str(fd)})


def test_reresolver_reads_the_command_line_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALFREY_SERVER__BACKLOG", "64")
    result = Reresolver(("main:app", "--port", "9000"))()
    assert (result.listeners[0].spec.port, result.backlog) == (9000, 64)
    assert Reresolver(overrides={"app": "main:app", "port": 9001})().listeners[0].spec.port == 9001
    assert pickle.loads(pickle.dumps(Reresolver(("main:app",)))).argv == ("main:app",)


def test_reresolver_reports_what_startup_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    from palfrey.plan.resolve import ResolveError

    with pytest.raises(ResolveError, match=r"Invalid configuration \(1 problem\)"):
        Reresolver(("main:app", "--port", "many"))()
    monkeypatch.setattr("palfrey.plan.check.installed", lambda module: module != "uvloop")
    with pytest.raises(ResolveError, match="needs the 'uvloop' package"):
        Reresolver(("main:app", "--loop", "uvloop"))()
    with pytest.raises(ResolveError, match="HTTP/3 needs a TCP listener"):
        Reresolver(("main:app", "--http", "h3", "--ssl-certfile", "/c.pem", "--uds", "/a.sock"))()


def test_can_exec_only_a_command_line_that_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/palfrey", "main:app"])
    assert launch.can_exec() is (os.name == "posix")
    for argv0 in ("", "-"):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert not launch.can_exec()


def test_validate_in_child_returns_what_the_child_returned(
    capfd: pytest.CaptureFixture[str],
) -> None:
    sent = Launch(make_plan())
    assert launch.validate_in_child(lambda: sent) == sent
    assert launch.validate_in_child(lambda: 2) == 2

    def crash() -> Launch:
        os._exit(7)

    assert launch.validate_in_child(crash) == 1
    assert "could not be read (status 7)" in capfd.readouterr().err

    def raises() -> Launch:
        raise RuntimeError("a bug in reading the configuration")

    assert launch.validate_in_child(raises) == 1
    assert "RuntimeError: a bug in reading the configuration" in capfd.readouterr().err
