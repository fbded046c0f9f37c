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
    assert "'server' is a section: it must be a table of settings, got 8000." in errors(
        ["--config", str(manifest)]
    )


def test_contradictions_are_reported_beside_bad_values() -> None:
    text = errors(["--reload", "--workers", "2", "--port", "eighty"])
    assert "'server.port': Input should be a valid integer" in text
    assert "reload needs a single process" in text


def test_yaml_typed_scalars_get_a_quoting_hint(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.yaml"
    manifest.write_text("lifespan:\n  mode: on\n")
    assert "(got True); YAML reads on/off/yes/no and bare numbers as non-strings: quote it" in (
        errors(["--config", str(manifest)])
    )


def test_flat_uvicorn_key_at_top_of_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text("workers = 4\n")
    assert "Did you mean 'workers.count = 4'?" in errors(["--config", str(manifest)])


def test_a_missing_flag_value_is_a_problem_not_a_crash() -> None:
    assert "--port: expected one argument" in errors(["main:app", "--port"])


def test_unknown_flag_takes_its_value_with_it() -> None:
    text = errors(["main:app", "--wokers", "2"])
    assert "Invalid configuration (1 problem)" in text
    assert "Did you mean --workers?" in text


def test_warnings_survive_an_invalid_config() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["--port", "x"], environ={"PALFREY_WOKERS": "3", "UVICORN_PORT": "1"})
    assert any("PALFREY_WOKERS" in w for w in info.value.warnings)
    assert "UVICORN_PORT is not read by Palfrey: rename it PALFREY_PORT" in info.value.warnings


def test_path_derived_flags_are_accepted_for_uvicorn_options() -> None:
    config = load_config(["--workers-count", "3", "--tls-certfile", "c.pem"], environ={})
    assert (config.workers.count, str(config.tls.certfile)) == (3, "c.pem")
