"""defaults < manifest < environment < CLI, for every kind of option, merged deeply."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from palfrey.config import load_config, resolve
from palfrey.config.registry import by_path


@dataclass(frozen=True)
class Case:
    """How to set one option in each layer, and the value each layer should produce."""

    path: tuple[str, ...]
    toml: str
    env: tuple[str, str]
    cli: tuple[str, ...]
    expected: dict[str, Any]


CASES = [
    Case(("server", "port"), "port = 1001", ("PALFREY_PORT", "1002"), ("--port", "1003"),
         {"file": 1001, "env": 1002, "cli": 1003}),
    Case(("logging", "access_log"), "access_log = false", ("PALFREY_ACCESS_LOG", "true"),
         ("--no-access-log",), {"file": False, "env": True, "cli": False}),
    Case(("proxy", "forwarded_allow_ips"), 'forwarded_allow_ips = ["10.0.0.1"]',
         ("PALFREY_FORWARDED_ALLOW_IPS", "10.0.0.2,10.0.0.3"), ("--forwarded-allow-ips", "*"),
         {"file": ("10.0.0.1",), "env": ("10.0.0.2", "10.0.0.3"), "cli": ("*",)}),
    Case(("timeouts", "keep_alive"), 'keep_alive = "1m"', ("PALFREY_TIMEOUTS__KEEP_ALIVE", "2"),
         ("--timeout-keep-alive", "3s"), {"file": 60.0, "env": 2.0, "cli": 3.0}),
    Case(("http", "backend"), 'backend = "h11"', ("PALFREY_HTTP", "httptools"), ("--http", "h11"),
         {"file": "h11", "env": "httptools", "cli": "h11"}),
    Case(("limits", "concurrency"), "concurrency = 10", ("PALFREY_LIMIT_CONCURRENCY", "20"),
         ("--limit-concurrency", "30"), {"file": 10, "env": 20, "cli": 30}),
    Case(("logging", "dict_config"), "dict_config = { version = 1 }",
         ("PALFREY_LOGGING__DICT_CONFIG", '{"version": 1, "root": {}}'),
         ("--logging-dict-config", '{"version": 1, "loggers": {}}'),
         {"file": {"version": 1}, "env": {"version": 1, "root": {}},
          "cli": {"version": 1, "loggers": {}}}),
    Case(("server", "headers"), 'headers = ["X-A: file"]', ("PALFREY_HEADERS", "X-A: env"),
         ("--header", "X-A: cli"),
         {"file": (("X-A", "file"),), "env": (("X-A", "env"),), "cli": (("X-A", "cli"),)}),
]  # fmt: skip

LAYERS = ("file", "env", "cli")
SUBSETS = [s for n in range(4) for s in itertools.combinations(LAYERS, n)]


def _value(config: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("case", CASES, ids=lambda c: ".".join(c.path))
@pytest.mark.parametrize("layers", SUBSETS, ids=lambda s: "+".join(s) or "default")
def test_highest_layer_wins(tmp_path: Path, case: Case, layers: tuple[str, ...]) -> None:
    argv: list[str] = []
    environ: dict[str, str] = {}
    if "file" in layers:
        manifest = tmp_path / "palfrey.toml"
        manifest.write_text(f"[{case.path[0]}]\n{case.toml}\n")
        argv += ["--config", str(manifest)]
    if "env" in layers:
        environ[case.env[0]] = case.env[1]
    if "cli" in layers:
        argv += list(case.cli)
    resolved = resolve(argv, environ=environ)
    winner = layers[-1] if layers else "default"
    expected = case.expected.get(winner, by_path()[case.path].default)
    assert _value(resolved.config, case.path) == expected
    assert resolved.origins[case.path].kind == winner


def test_nested_partial_merge_across_layers(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text('[tls]\ncertfile = "cert.pem"\n[server]\nhost = "0.0.0.0"\nport = 1\n')
    config = load_config(
        ["--config", str(manifest), "--port", "3"],
        environ={"PALFREY_TLS__KEYFILE": "key.pem", "PALFREY_SERVER__BACKLOG": "16"},
    )
    assert config.tls.certfile == Path("cert.pem")
    assert config.tls.keyfile == Path("key.pem")
    assert (config.server.host, config.server.port, config.server.backlog) == ("0.0.0.0", 3, 16)


def test_section_json_env_merges_with_file_keys(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text("[limits]\nconcurrency = 5\n")
    config = load_config(
        ["--config", str(manifest)], environ={"PALFREY_LIMITS": '{"max_requests": 100}'}
    )
    assert (config.limits.concurrency, config.limits.max_requests) == (5, 100)


def test_origins_name_file_lines_env_and_flags(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text('app = "main:app"\n\n[server]\n# comment\nport = 1\n')
    resolved = resolve(
        ["--config", str(manifest), "--workers", "2"], environ={"PALFREY_HOST": "::"}
    )
    origins = resolved.origins
    assert str(origins[("app",)]) == f"{manifest}:1"
    assert str(origins[("server", "port")]) == f"{manifest}:5"
    assert str(origins[("server", "host")]) == "PALFREY_HOST"
    assert str(origins[("workers", "count")]) == "--workers"
    assert str(origins[("server", "backlog")]) == "default"
