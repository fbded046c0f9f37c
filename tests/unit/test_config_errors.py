"""Every problem at once, each naming the key, its source and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from palfrey.config import ConfigError, load_config


def errors(argv: list[str], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv, environ=environ or {})
    return info.value.render()


def test_unknown_keys_with_suggestions_and_lines(
    tmp_path: Path, snapshot: SnapshotAssertion
) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text(
        "\n".join(
            [
                'app = "main:app"',
                "port = 8000",
                "",
                "[server]",
                "prot = 8001",
                "workers = 2",
                "",
                "[timeout]",
                "keep_alive = 5",
                "",
                "[tls]",
                'certfile = "c.pem"',
                'keyfile_pasword = "x"',
            ]
        )
    )
    text = errors(["--config", str(manifest)]).replace(str(manifest), "palfrey.toml")
    assert text == snapshot


def test_yaml_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.yaml"
    manifest.write_text("server:\n  host: 0.0.0.0\n  prot: 1\n")
    assert f"{manifest}:3: unknown key 'server.prot'. Did you mean 'server.port'?" in errors(
        ["--config", str(manifest)]
    )


def test_every_source_reports_at_once(tmp_path: Path, snapshot: SnapshotAssertion) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text('[server]\nport = "eighty"\n[lifespan]\nmode = "sometimes"\n')
    text = errors(
        ["--config", str(manifest), "--workers", "0", "--limit-concurrency", "-1", "--bogus"],
        {
            "PALFREY_TIMEOUTS__KEEP_ALIVE": "forever",
            "PALFREY_SERVER__PROT": "1",
            "PALFREY_HTTP": "zttp",
            "PALFREY_PROXY__FORWARDED_ALLOW_IPS": "[not json",
        },
    )
    assert text.replace(str(manifest), "palfrey.toml") == snapshot


def test_contradiction_names_both_sources(snapshot: SnapshotAssertion) -> None:
    text = errors(["--reload", "--http", "h3"], {"PALFREY_WORKERS": "2"})
    assert text == snapshot


def test_secret_values_never_appear_in_errors() -> None:
    text = errors([], {"PALFREY_TLS__KEYFILE_PASSWORD": "hunter2", "PALFREY_TLS__CERT_REQS": "9"})
    assert "hunter2" not in text


def test_section_must_be_a_table(tmp_path: Path) -> None:
    manifest = tmp_path / "p.yaml"
    manifest.write_text("server: 8000\n")
    assert "'server' must be a table of settings, got 8000" in errors(["--config", str(manifest)])
