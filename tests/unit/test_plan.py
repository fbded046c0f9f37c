"""plan(config) is pure: the same Config and environment give the same plan."""

from __future__ import annotations

import os

from palfrey.build.listeners import ListenerSpec
from palfrey.build.plan import plan
from palfrey.config import load_config as _load_config
from palfrey.config.model import to_runtime
from palfrey.config.runtime import RuntimeConfig


def load_config(argv: list[str], environ: dict[str, str]) -> RuntimeConfig:
    """What plan() is handed: the validated config's runtime copy."""
    return to_runtime(_load_config(argv, environ=environ))


def test_defaults() -> None:
    result = plan(load_config(["main:app"], environ={}), environ={})
    assert result.listeners == (ListenerSpec(kind="tcp", host="127.0.0.1", port=8000),)
    assert result.alpn == ("http/1.1",)
    assert (result.tls, result.http2, result.http3, result.workers) == (False, False, False, 1)


def test_http2_adds_alpn_and_bind_lists_listeners() -> None:
    config = load_config(
        [
            "main:app",
            "--http",
            "h2",
            "--server-bind",
            "[::1]:9000",
            "--server-bind",
            "unix:/run/a.sock",
        ],
        environ={},
    )
    result = plan(config, environ={})
    assert result.alpn == ("h2", "http/1.1")
    assert [str(spec) for spec in result.listeners] == ["[::1]:9000", "unix:/run/a.sock"]
    assert "HTTP/1.1 + HTTP/2" in result.summary()


def test_systemd_sockets_are_used_when_passed_to_this_process() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid())}
    result = plan(load_config(["main:app"], environ={}), environ=env)
    assert result.listeners == (ListenerSpec(kind="fd", fd=3), ListenerSpec(kind="fd", fd=4))
    assert plan(load_config(["main:app", "--port", "1"], environ={}), environ=env).listeners == (
        ListenerSpec(kind="tcp", host="127.0.0.1", port=1),
    )
