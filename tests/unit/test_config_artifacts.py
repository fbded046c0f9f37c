"""Generated artifacts: the schema, --help, --print-config and the reference docs.

A snapshot diff here is an API diff: update snapshots only on purpose
(`pytest --snapshot-update`), and regenerate the committed files with
`python -m palfrey.config.reference`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from syrupy.assertion import SnapshotAssertion

from palfrey.config import Config, load_config, resolve
from palfrey.config.reference import help_text, outputs
from palfrey.config.render import to_toml
from palfrey.config.schema import build_schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(outputs(ROOT)), ids=lambda p: p.name)
def test_committed_files_match_the_model(path: Path) -> None:
    expected = outputs(ROOT)[path]
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path.relative_to(ROOT)} is stale: run `python -m palfrey.config.reference`"
    )


def test_schema_snapshot(snapshot: SnapshotAssertion) -> None:
    assert build_schema() == snapshot


def test_schema_is_valid_2020_12_and_documents_every_key() -> None:
    schema = build_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for name, definition in schema["$defs"].items():
        for key, prop in definition["properties"].items():
            assert prop["description"], f"{name}.{key} has no description"
            assert prop["x-env"], f"{name}.{key} lacks x-env"
            assert prop["x-cli"], f"{name}.{key} lacks x-cli"
            assert "default" in prop, f"{name}.{key} has no default"


def test_schema_accepts_what_the_loader_accepts_and_rejects_unknown_keys() -> None:
    validator = jsonschema.Draft202012Validator(build_schema())
    good = {
        "$schema": "x",
        "app": "main:app",
        "server": {"port": 1, "uds_permissions": "0o660", "headers": ["X-A: 1"]},
        "timeouts": {"keep_alive": "5s", "graceful_shutdown": "none"},
        "http": {"max_head_size": "32KiB"},
    }
    assert list(validator.iter_errors(good)) == []
    Config.model_validate({k: v for k, v in good.items() if k != "$schema"})
    assert list(validator.iter_errors({"server": {"prot": 1}}))
    assert list(validator.iter_errors({"servers": {}}))


def test_help_snapshot(snapshot: SnapshotAssertion) -> None:
    assert help_text(columns=100) == snapshot


def test_print_config_snapshot(tmp_path: Path, snapshot: SnapshotAssertion) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text('app = "main:app"\n[server]\nport = 9000\n')
    resolved = resolve(
        ["--config", str(manifest), "--workers", "2", "--header", "X-A: 1"],
        environ={"PALFREY_TLS__CERTFILE": "c.pem", "PALFREY_SSL_KEYFILE_PASSWORD": "hunter2"},
    )
    text = to_toml(resolved.config, resolved.origins).replace(str(manifest), "palfrey.toml")
    assert "hunter2" not in text
    assert text == snapshot


def test_print_config_round_trips(tmp_path: Path) -> None:
    original = load_config(
        [
            "pkg.main:create",
            "--factory",
            "--uds",
            "/run/app.sock",
            "--header",
            "X-A: 1, 2",
            "--timeout-graceful-shutdown",
            "none",
            "--http",
            "h2",
            "--logging-dict-config",
            json.dumps({"version": 1, "formatters": {"f": {"()": "x.Y", "fmt": "%(message)s"}}}),
        ],
        environ={"PALFREY_SERVER__UDS_PERMISSIONS": "600", "PALFREY_LIMITS__MAX_BODY_SIZE": "1MiB"},
    )
    manifest = tmp_path / "printed.toml"
    manifest.write_text(to_toml(original))
    assert load_config(["--config", str(manifest)], environ={}) == original
