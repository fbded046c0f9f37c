"""The example manifests in examples/configs/ validate against the published schema and
load to the Config they promise.

The schema check uses the `jsonschema` package, a validator independent of pydantic, so
a schema that pydantic would accept but an editor would flag (or the reverse) shows up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from jsonschema import Draft202012Validator

from palfrey.config import Config, resolve

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "configs"
KUBERNETES = EXAMPLES / "kubernetes"
SCHEMA_PATH = ROOT / "schemas" / "palfrey.schema.json"

MANIFESTS = [
    *sorted(
        path for suffix in ("toml", "yaml", "yml", "json") for path in EXAMPLES.glob(f"*.{suffix}")
    ),
    KUBERNETES / "palfrey.yaml",
]
KUBERNETES_OBJECTS = ("configmap.yaml", "deployment.yaml", "secret.yaml")
PRODUCTION = [
    path
    for path in (EXAMPLES / f"production.{suffix}" for suffix in ("toml", "yaml", "json"))
    if path.exists()
]


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(EXAMPLES)) for path in paths]


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def _load(path: Path, environ: dict[str, str] | None = None) -> Config:
    return resolve(["--config", str(path)], environ=environ or {}).config


def _kube(name: str) -> dict[str, Any]:
    document = yaml.safe_load((KUBERNETES / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _container_env() -> dict[str, str]:
    deployment = _kube("deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"]}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_the_examples_are_all_there() -> None:
    names = {str(path.relative_to(EXAMPLES)) for path in MANIFESTS}
    assert {"minimal.toml", "production.toml", "production.yaml"} <= names
    assert (EXAMPLES / "env-only.env").is_file()
    for name in (*KUBERNETES_OBJECTS, "README.md"):
        assert (KUBERNETES / name).is_file(), name


# -- schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids(MANIFESTS))
def test_manifest_validates_against_the_schema(path: Path, validator: Draft202012Validator) -> None:
    errors = [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(_parse(path))
    ]
    assert errors == []


def test_configmap_data_validates_against_the_schema(validator: Draft202012Validator) -> None:
    embedded = _kube("configmap.yaml")["data"]["palfrey.yaml"]
    assert list(validator.iter_errors(yaml.safe_load(embedded))) == []


def test_schema_rejects_what_palfrey_rejects(validator: Draft202012Validator) -> None:
    """The validator is not vacuous: an unknown key and a bad value are both flagged."""
    data = _parse(EXAMPLES / "production.toml")
    data["server"]["prot"] = 8443
    data["lifespan"]["mode"] = True  # YAML's bare `on`
    flagged = {tuple(error.absolute_path) for error in validator.iter_errors(data)}
    assert flagged == {("server",), ("lifespan", "mode")}


# -- editor directives ----------------------------------------------------------------------


def _directive_target(path: Path) -> Path:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    if path.suffix == ".toml":
        prefix = "#:schema "
    elif path.suffix == ".json":
        target = str(json.loads(path.read_text(encoding="utf-8"))["$schema"])
        return (path.parent / target).resolve()
    else:
        prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix), f"{path.name}: first line is {first!r}"
    return (path.parent / first.removeprefix(prefix).strip()).resolve()


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids(MANIFESTS))
def test_manifest_schema_directive_points_at_the_schema(path: Path) -> None:
    assert _directive_target(path) == SCHEMA_PATH.resolve()


# -- loading --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids(MANIFESTS))
def test_manifest_loads(path: Path) -> None:
    resolved = resolve(["--config", str(path)], environ={})
    assert isinstance(resolved.config, Config)
    assert resolved.config.app is not None
    assert resolved.warnings == ()


def test_minimal_manifest() -> None:
    config = _load(EXAMPLES / "minimal.toml")
    assert config.app == "examples.app:app"
    assert config.server.port == 8000
    assert config.logging.level == "debug"
    assert config.server.host == "127.0.0.1"  # everything else keeps its default


@pytest.mark.parametrize("path", PRODUCTION[1:], ids=_ids(PRODUCTION[1:]))
def test_production_formats_are_equal(path: Path) -> None:
    assert _load(path) == _load(EXAMPLES / "production.toml")


def test_production_values() -> None:
    config = _load(EXAMPLES / "production.toml")
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 8443
    assert config.server.headers[1] == ("X-Content-Type-Options", "nosniff")
    assert config.http.max_head_size == 32 * 1024
    assert config.http2.enabled is True
    assert config.tls.enabled
    assert config.tls.keyfile_password is None
    assert str(config.tls.keyfile_password_file) == "/run/secrets/palfrey/tls-key-password"
    assert config.lifespan.mode == "on"
    assert config.proxy.forwarded_allow_ips == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    assert config.limits.max_body_size == 16 * 1024 * 1024
    assert config.timeouts.keep_alive == 75.0
    assert config.timeouts.header_read == 10.0
    assert config.timeouts.graceful_shutdown == 25.0
    assert config.workers.count == 4
    assert config.logging.use_colors is False


def test_env_only_equals_production_toml() -> None:
    environ = {k: v for k, v in dotenv_values(EXAMPLES / "env-only.env").items() if v is not None}
    assert all(name.startswith("PALFREY_") for name in environ)
    resolved = resolve([], environ=environ)
    assert resolved.warnings == ()
    assert resolved.config == _load(EXAMPLES / "production.toml")
    # Every value came from the environment, under the name written in the file.
    origins = {str(origin) for origin in resolved.origins.values() if origin.kind != "default"}
    assert origins == set(environ)


def test_env_only_mixes_flat_and_nested_names() -> None:
    names = [name for name in dotenv_values(EXAMPLES / "env-only.env") if name != "PALFREY_APP"]
    nested = [name for name in names if "__" in name]
    assert nested
    assert len(nested) < len(names)


# -- Kubernetes -----------------------------------------------------------------------------


def test_configmap_holds_the_manifest_verbatim() -> None:
    configmap = _kube("configmap.yaml")
    assert configmap["kind"] == "ConfigMap"
    embedded = configmap["data"]["palfrey.yaml"]
    assert embedded == (KUBERNETES / "palfrey.yaml").read_text(encoding="utf-8")


def test_deployment_mounts_configmap_and_secret() -> None:
    pod = _kube("deployment.yaml")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    env = _container_env()
    config_dir = str(Path(env["PALFREY_CONFIG"]).parent)
    assert mounts[config_dir]["configMap"]["name"] == _kube("configmap.yaml")["metadata"]["name"]
    secret = _kube("secret.yaml")
    assert mounts[env["PALFREY_SECRETS_DIR"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert Path(env["PALFREY_CONFIG"]).name in _kube("configmap.yaml")["data"]
    # The pod outlives the graceful shutdown, so in-flight requests can finish.
    graceful = _load(KUBERNETES / "palfrey.yaml").timeouts.graceful_shutdown
    assert graceful is not None
    assert pod["terminationGracePeriodSeconds"] > graceful


def _mount_secret(directory: Path, data: dict[str, str]) -> Path:
    """Lay files out as the kubelet mounts a Secret: symlinks through `..data`."""
    timestamped = directory / "..2026_01_01_00_00_00.000000000"
    timestamped.mkdir(parents=True)
    for name, value in data.items():
        (timestamped / name).write_text(value, encoding="utf-8")
        (directory / name).symlink_to(Path("..data") / name)
    (directory / "..data").symlink_to(timestamped.name)
    return directory


def test_deployment_env_overrides_the_configmap(tmp_path: Path) -> None:
    secret = _kube("secret.yaml")
    secrets_dir = _mount_secret(tmp_path / "secrets", secret["stringData"])
    environ = _container_env()
    environ["PALFREY_CONFIG"] = str(KUBERNETES / "palfrey.yaml")
    environ["PALFREY_SECRETS_DIR"] = str(secrets_dir)

    resolved = resolve([], environ=environ)
    config, origins = resolved.config, resolved.origins
    manifest = _load(KUBERNETES / "palfrey.yaml")

    assert manifest.workers.count == 2
    assert config.workers.count == 4
    assert str(origins["workers", "count"]) == "PALFREY_WORKERS"
    assert manifest.logging.level == "info"
    assert config.logging.level == "warning"
    assert manifest.timeouts.keep_alive == 75.0
    assert config.timeouts.keep_alive == 65.0
    # The password comes from the mounted Secret; its other files are not options.
    assert config.tls.keyfile_password is not None
    expected = secret["stringData"]["tls.keyfile_password"]
    assert config.tls.keyfile_password.get_secret_value() == expected
    assert origins["tls", "keyfile_password"].kind == "secret"
    # Everything the env does not override is the manifest's.
    assert config.server == manifest.server
    assert config.tls.certfile == manifest.tls.certfile
    assert config.proxy == manifest.proxy
