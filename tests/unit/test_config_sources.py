"""Each configuration source on its own, then the layers merged."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from palfrey.config import Config, ConfigError, load_config, resolve


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- manifests ----------------------------------------------------------------------------------

TOML = """
app = "main:app"
[server]
port = 9001
headers = ["X-Frame-Options: DENY"]
[timeouts]
keep_alive = "30s"
[http]
max_head_size = "32KiB"
"""

YAML = """
app: main:app
server:
  port: 9001
  headers: ["X-Frame-Options: DENY"]
timeouts:
  keep_alive: 30s
http:
  max_head_size: 32KiB
"""

JSON = json.dumps(
    {
        "$schema": "../schemas/palfrey.schema.json",
        "app": "main:app",
        "server": {"port": 9001, "headers": ["X-Frame-Options: DENY"]},
        "timeouts": {"keep_alive": "30s"},
        "http": {"max_head_size": "32KiB"},
    }
)


@pytest.mark.parametrize(("name", "text"), [("p.toml", TOML), ("p.yaml", YAML), ("p.json", JSON)])
def test_manifest_formats_agree(tmp_path: Path, name: str, text: str) -> None:
    config = load_config(["--config", str(write(tmp_path, name, text))], environ={})
    assert config.app == "main:app"
    assert config.server.port == 9001
    assert config.server.headers == (("X-Frame-Options", "DENY"),)
    assert config.timeouts.keep_alive == 30.0
    assert config.http.max_head_size == 32 * 1024


def test_pyproject_tool_table(tmp_path: Path) -> None:
    path = write(
        tmp_path, "pyproject.toml", '[project]\nname = "x"\n[tool.palfrey.server]\nport = 7\n'
    )
    assert load_config(["--config", str(path)], environ={}).server.port == 7


def test_pyproject_without_table_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"no \[tool.palfrey\] table"):
        load_config(["--config", str(path)], environ={})


def test_manifest_from_palfrey_config_env(tmp_path: Path) -> None:
    path = write(tmp_path, "m.toml", "[workers]\ncount = 3\n")
    assert load_config([], environ={"PALFREY_CONFIG": str(path)}).workers.count == 3


def test_missing_explicit_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(["--config", str(tmp_path / "nope.toml")], environ={})


def test_unknown_manifest_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown manifest format '\.ini'"):
        load_config(["--config", str(write(tmp_path, "a.ini", "x"))], environ={})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.toml", "[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_config(["--config", str(path)], environ={})


def test_none_unsets_an_optional_key_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "n.toml", '[timeouts]\ngraceful_shutdown = "none"\n')
    assert load_config(["--config", str(path)], environ={}).timeouts.graceful_shutdown is None


# -- environment ------------------------------------------------------------------------------


def test_nested_env_names() -> None:
    config = load_config(
        [],
        environ={
            "PALFREY_SERVER__PORT": "9002",
            "PALFREY_TLS__CIPHERS": "ECDHE+AESGCM",
            "PALFREY_PROXY__FORWARDED_ALLOW_IPS": '["10.0.0.0/8", "::1"]',
            "PALFREY_LOGGING__DICT_CONFIG": '{"version": 1}',
        },
    )
    assert config.server.port == 9002
    assert config.tls.ciphers == "ECDHE+AESGCM"
    assert config.proxy.forwarded_allow_ips == ("10.0.0.0/8", "::1")
    assert config.logging.dict_config == {"version": 1}


@pytest.mark.parametrize(
    ("name", "value", "check"),
    [
        ("PALFREY_HTTP", "httptools", lambda c: c.http.backend == "httptools"),
        ("PALFREY_HTTP", "h2", lambda c: c.http2.enabled and c.http.backend == "auto"),
        ("PALFREY_HTTP", "h3", lambda c: c.http3.enabled),
        ("PALFREY_WORKERS", "4", lambda c: c.workers.count == 4),
        ("PALFREY_LIFESPAN", "on", lambda c: c.lifespan.mode == "on"),
        ("PALFREY_RELOAD", "true", lambda c: c.reload.enabled),
        ("PALFREY_HTTP", '{"max_header_count": 7}', lambda c: c.http.max_header_count == 7),
        ("PALFREY_WORKERS", '{"count": 2}', lambda c: c.workers.count == 2),
        ("PALFREY_TLS", '{"ciphers": "X"}', lambda c: c.tls.ciphers == "X"),
    ],
)
def test_flat_names_that_equal_a_section(name: str, value: str, check: object) -> None:
    config = load_config([], environ={name: value, "PALFREY_TLS__CERTFILE": "c.pem"})
    assert callable(check)
    assert check(config)


def test_flat_uvicorn_names() -> None:
    config = load_config(
        [],
        environ={
            "PALFREY_HOST": "0.0.0.0",
            "PALFREY_PORT": "80",
            "PALFREY_SSL_CERTFILE": "/c.pem",
            "PALFREY_RELOAD_DIRS": "src,lib",
            "PALFREY_HEADERS": "X-A: 1, X-B: two, three",
            "PALFREY_WS_PER_MESSAGE_DEFLATE": "false",
            "PALFREY_TIMEOUT_GRACEFUL_SHUTDOWN": "none",
            "PALFREY_LOG_LEVEL": "WARNING",
        },
    )
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 80
    assert config.tls.certfile == Path("/c.pem")
    assert config.reload.dirs == ("src", "lib")
    assert config.server.headers == (("X-A", "1"), ("X-B", "two, three"))
    assert config.websocket.per_message_deflate is False
    assert config.timeouts.graceful_shutdown is None
    assert config.logging.level == "warning"


def test_nested_and_flat_name_disagreeing_is_an_error() -> None:
    with pytest.raises(ConfigError, match="also set by PALFREY_PORT"):
        load_config([], environ={"PALFREY_PORT": "1", "PALFREY_SERVER__PORT": "2"})


def test_platform_variables_are_defaults_below_the_manifest(tmp_path: Path) -> None:
    env = {"WEB_CONCURRENCY": "3", "FORWARDED_ALLOW_IPS": "10.1.1.1,10.2.2.2"}
    config = load_config([], environ=env)
    assert config.workers.count == 3
    assert config.proxy.forwarded_allow_ips == ("10.1.1.1", "10.2.2.2")
    manifest = write(tmp_path, "w.toml", "[workers]\ncount = 5\n")
    assert load_config(["--config", str(manifest)], environ=env).workers.count == 5
    assert load_config([], environ={**env, "PALFREY_WORKERS": "6"}).workers.count == 6


def test_unknown_flat_names_are_warnings_not_errors() -> None:
    resolved = resolve([], environ={"PALFREY_PROT": "1"})
    assert resolved.warnings == (
        "PALFREY_PROT is not a Palfrey setting and is ignored. Did you mean PALFREY_PORT?",
    )


def test_env_file_is_read_first_and_existing_env_wins(tmp_path: Path) -> None:
    env_file = write(
        tmp_path,
        "app.env",
        "PALFREY_PORT=7001\nPALFREY_HOST=0.0.0.0\nWEB_CONCURRENCY=4\nPALFREY_CONFIG={}\n".format(
            write(tmp_path, "m.toml", "[limits]\nconcurrency = 10\n")
        ),
    )
    config = load_config(["--env-file", str(env_file)], environ={"PALFREY_HOST": "::"})
    assert config.server.port == 7001
    assert config.server.host == "::"
    assert config.workers.count == 4
    assert config.limits.concurrency == 10


def test_env_file_named_in_the_manifest(tmp_path: Path) -> None:
    env_file = write(tmp_path, ".env", "PALFREY_PORT=7002\n")
    manifest = write(tmp_path, "m.toml", f'env_file = "{env_file}"\n')
    assert load_config(["--config", str(manifest)], environ={}).server.port == 7002


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="env file not found"):
        load_config(["--env-file", str(tmp_path / "none.env")], environ={})


def test_secrets_directory(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "PALFREY_TLS__KEYFILE_PASSWORD").write_text("hunter2\n")
    (secrets / "tls.crt").write_text("unrelated")
    env = {"PALFREY_SECRETS_DIR": str(secrets), "PALFREY_SSL_CERTFILE": "c.pem"}
    config = load_config([], environ=env)
    assert config.tls.keyfile_password is not None
    assert config.tls.keyfile_password.get_secret_value() == "hunter2"
    flag = load_config(["--secrets-dir", str(secrets), "--ssl-certfile", "c.pem"], environ={})
    assert flag.tls.keyfile_password == config.tls.keyfile_password


# -- CLI and API ------------------------------------------------------------------------------


def test_cli_flags_of_every_style() -> None:
    config = load_config(
        [
            "main:app",
            "--port=9003",
            "--no-access-log",
            "--reload-dir",
            "a",
            "--reload-dir",
            "b",
            "--forwarded-allow-ips",
            "10.0.0.1,10.0.0.2",
            "--ws-per-message-deflate",
            "false",
            "--http",
            "h2",
            "--http2-max-concurrent-streams",
            "50",
            "--ssl-cert-reqs",
            "required",
            "--ssl-ca-certs",
            "ca.pem",
        ],
        environ={},
    )
    assert config.app == "main:app"
    assert config.server.port == 9003
    assert config.logging.access_log is False
    assert config.reload.dirs == ("a", "b")
    assert config.proxy.forwarded_allow_ips == ("10.0.0.1", "10.0.0.2")
    assert config.websocket.per_message_deflate is False
    assert config.http2.enabled
    assert config.http2.max_concurrent_streams == 50
    assert config.tls.cert_reqs == 2


def test_api_keywords_take_uvicorn_names_and_sections() -> None:
    config = load_config(
        environ={}, app="main:app", port=9004, workers=2, http="h3", tls={"certfile": "c.pem"}
    )
    assert (config.app, config.server.port, config.workers.count) == ("main:app", 9004, 2)
    assert config.http3.enabled
    assert config.tls.certfile == Path("c.pem")


# -- the model --------------------------------------------------------------------------------


def test_config_is_frozen_hashable_and_pickles() -> None:
    config = load_config(
        ["main:app", "--header", "X-A: 1"],
        environ={"PALFREY_LOGGING__DICT_CONFIG": '{"version": 1}'},
    )
    with pytest.raises(ValidationError):
        config.server.port = 1  # type: ignore[misc]
    assert hash(config) == hash(pickle.loads(pickle.dumps(config)))
    assert pickle.loads(pickle.dumps(config)) == config
    assert {config: 1}[
        load_config(
            ["main:app", "--header", "X-A: 1"],
            environ={"PALFREY_LOGGING__DICT_CONFIG": '{"version": 1}'},
        )
    ] == 1


def test_model_rejects_contradictions_when_built_directly() -> None:
    with pytest.raises(ValidationError, match="reload needs a single process"):
        Config.model_validate({"reload": {"enabled": True}, "workers": {"count": 2}})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--uds", "/tmp/s", "--port", "1"], "server.uds replaces the TCP listener"),
        (["--uds", "/tmp/s", "--fd", "3"], "choose one listener"),
        (["--http", "h3"], "HTTP/3 needs TLS"),
        (["--ssl-keyfile", "k.pem"], "tls.keyfile needs tls.certfile"),
        (["--ssl-certfile", "c", "--ssl-cert-reqs", "2"], "needs tls.ca_certs"),
        (
            ["--log-config", "l.json", "--logging-dict-config", "{}"],
            "give one logging configuration",
        ),
    ],
)
def test_contradictions(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, environ={})


def test_values_are_normalised() -> None:
    config = Config.model_validate(
        {
            "server": {"uds_permissions": "0o660", "headers": [["X-A", "1"]]},
            "timeouts": {"keep_alive": "250ms", "header_read": "1m"},
            "limits": {"max_body_size": "1MiB"},
            "tls": {"cert_reqs": "optional", "ca_certs": "ca.pem"},
        }
    )
    assert config.server.uds_permissions == 0o660
    assert config.server.headers == (("X-A", "1"),)
    assert config.timeouts.keep_alive == 0.25
    assert config.timeouts.header_read == 60.0
    assert config.limits.max_body_size == 1024 * 1024
    assert config.tls.cert_reqs == 1


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("server", {"headers": ["NoColon"]}, "Name: Value"),
        ("server", {"headers": ["Bad Name: x"]}, "not a valid header name"),
        ("server", {"bind": ["localhost"]}, "is not"),
        ("server", {"loop": "trio"}, "import string"),
        ("timeouts", {"keep_alive": "5 minutes"}, "ms, s, m or h"),
        ("proxy", {"forwarded_allow_ips": ["10.0.0.300"]}, "not an IP address"),
    ],
)
def test_bad_values(section: str, values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Config.model_validate({section: values})


def test_env_file_values_name_their_file_as_origin(tmp_path: Path) -> None:
    env_file = write(tmp_path, "app.env", "PALFREY_WORKERS=2\n")
    resolved = resolve(["--env-file", str(env_file)], environ={})
    assert str(resolved.origins[("workers", "count")]) == f"PALFREY_WORKERS (from {env_file})"


def test_reload_options_without_reload_warn() -> None:
    resolved = resolve(["--reload-dir", "src"], environ={})
    assert resolved.warnings == ("reload.dirs has no effect without reload.enabled (--reload)",)
