"""The production tutorial and the Kubernetes example, run for real.

Tutorial (docs/getting-started/first-deployment.md): the page's own openssl command makes
the internal certificate, Palfrey serves the page's manifest (four workers, TLS, HTTP/2)
and the page's nginx configuration proxies to it. Only what a test must change is
changed: Palfrey binds port 0 (through an environment override, the way the page's
layering works), nginx listens on UNIX sockets instead of ports 443 and 80, and file paths
point into the test's directory.

Kubernetes (examples/configs/kubernetes/): the manifest from the ConfigMap with the
Deployment's environment and a secrets directory laid out as the kubelet mounts a Secret;
the Deployment's probes are answered on the health listener, readiness fails from the
first moment of shutdown while the app keeps serving, and the process exits 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization

from tests.docs.checks import nginx_binary
from tests.docs.snippets import ROOT, Block, blocks_of, shell_commands
from tests.helpers.process import PalfreyProcess

TUTORIAL = ROOT / "docs" / "getting-started" / "first-deployment.md"
KUBERNETES = ROOT / "examples" / "configs" / "kubernetes"

pytestmark = pytest.mark.slow


def _block(page: Path, lang: str, contains: str = "") -> Block:
    (found,) = [b for b in blocks_of(page) if b.lang == lang and contains in b.text]
    return found


def _openssl(folder: Path) -> None:
    """The page's openssl command, run in `folder`: palfrey.crt and palfrey.key."""
    (cmd,) = [
        c
        for c in shell_commands(_block(TUTORIAL, "bash", "openssl").text)
        if c.program == "openssl"
    ]
    subprocess.run(cmd.argv, cwd=folder, check=True, capture_output=True, timeout=60)


def _manifest(folder: Path) -> Path:
    block = _block(TUTORIAL, "toml", "[workers]")
    assert block.file == "/etc/palfrey/palfrey.toml"
    path = folder / "palfrey.toml"
    path.write_text(block.text, encoding="utf-8")
    (folder / "main.py").write_text(_block(TUTORIAL, "python").text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def internal_tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding the page's palfrey.crt and palfrey.key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("palfrey")
    _openssl(folder)
    return folder


@pytest.fixture(scope="module")
def palfrey(internal_tls: Path) -> Iterator[PalfreyProcess]:
    """Palfrey as the tutorial runs it, with its TLS files and port overridden by env
    (one server for the module: starting four workers takes seconds)."""
    folder = internal_tls
    env = {
        "PALFREY_PORT": "0",
        "PALFREY_TLS__CERTFILE": str(folder / "palfrey.crt"),
        "PALFREY_TLS__KEYFILE": str(folder / "palfrey.key"),
    }
    with PalfreyProcess(["--config", str(_manifest(folder))], cwd=folder, env=env) as proc:
        proc.wait_for_port(timeout=30)
        proc.wait_for_log("Started worker process", count=4, timeout=60)
        proc.wait_for_log("Palfrey running on https://", count=5, timeout=60)
        yield proc


def test_palfrey_serves_http2_over_tls_with_four_workers(
    palfrey: PalfreyProcess, internal_tls: Path
) -> None:
    context = ssl.create_default_context(cafile=str(internal_tls / "palfrey.crt"))
    with httpx.Client(http2=True, verify=context, timeout=10) as client:
        response = client.get(
            f"https://127.0.0.1:{palfrey.port}/",
            extensions={"sni_hostname": "palfrey.internal"},
        )
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
    assert response.text == "Hello, world!\n"
    assert palfrey.count("Started worker process") == 4


def _nginx_config(folder: Path, upstream_port: int, ca: trustme.CA, trusted: Path) -> Path:
    """The page's nginx block, on UNIX sockets and with the test's files; `trusted` is
    what nginx trusts as Palfrey's certificate."""
    site = _block(TUTORIAL, "nginx").text
    public = ca.issue_cert("www.example.com")
    public.cert_chain_pems[0].write_to_path(str(folder / "www.crt"))
    public.private_key_pem.write_to_path(str(folder / "www.key"))
    replacements = {
        "listen 443 ssl http2;": f"listen unix:{folder}/https.sock ssl http2;",
        "listen 80;": f"listen unix:{folder}/http.sock;",
        "server 127.0.0.1:8443;": f"server 127.0.0.1:{upstream_port};",
        "/etc/nginx/tls/www.example.com.crt": str(folder / "www.crt"),
        "/etc/nginx/tls/www.example.com.key": str(folder / "www.key"),
        "/etc/palfrey/tls/palfrey.crt": str(trusted),
    }
    for old, new in replacements.items():
        assert old in site, f"the tutorial's nginx block no longer has {old!r}"
        site = site.replace(old, new)
    (folder / "site.conf").write_text(site, encoding="utf-8")
    return _wrap(folder, folder / "site.conf")


def _wrap(folder: Path, site: Path) -> Path:
    """A main nginx.conf around an `http`-context snippet (as conf.d/ files are)."""
    temp = "".join(
        f"    {kind}_temp_path {folder}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root root;\n" if os.geteuid() == 0 else ""
    text = (
        f"{user}daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log notice;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n{temp}    include {site};\n}}\n"
    )
    path = folder / "nginx.conf"
    path.write_text(text, encoding="utf-8")
    return path


def test_nginx_in_front_serves_http2_and_reaches_palfrey_over_verified_tls(
    palfrey: PalfreyProcess, internal_tls: Path, tmp_path: Path
) -> None:
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    ca = trustme.CA()
    config = _nginx_config(tmp_path, palfrey.port or 0, ca, internal_tls / "palfrey.crt")
    check = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        socket_path = tmp_path / "https.sock"
        deadline = time.monotonic() + 15
        while not socket_path.exists():
            assert proc.poll() is None, (tmp_path / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        before = palfrey.count('"GET / HTTP/1.1" 200 OK')
        transport = httpx.HTTPTransport(uds=str(socket_path), http2=True, verify=context)
        with httpx.Client(transport=transport, timeout=10) as client:
            for _ in range(3):  # through nginx's kept-alive upstream connection too
                response = client.get("https://www.example.com/")
                assert response.status_code == 200, (tmp_path / "error.log").read_text()
                assert response.http_version == "HTTP/2"
                assert response.text == "Hello, world!\n"
        palfrey.wait_for_log('"GET / HTTP/1.1" 200 OK', count=3 + before)
        plain = httpx.HTTPTransport(uds=str(tmp_path / "http.sock"))
        with httpx.Client(transport=plain, timeout=10) as client:
            redirect = client.get("http://www.example.com/page")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "https://www.example.com/page"
    finally:
        proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_a_wrong_certificate_on_the_internal_hop_is_refused(
    palfrey: PalfreyProcess, tmp_path: Path
) -> None:
    """proxy_ssl_verify is really on: nginx trusting another certificate answers 502."""
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    config = _nginx_config(tmp_path, palfrey.port or 0, ca, tmp_path / "other-ca.pem")
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        socket_path = tmp_path / "https.sock"
        deadline = time.monotonic() + 15
        while not socket_path.exists():
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        transport = httpx.HTTPTransport(uds=str(socket_path), verify=context)
        with httpx.Client(transport=transport, timeout=10) as client:
            assert client.get("https://www.example.com/").status_code == 502
        assert "certificate" in (tmp_path / "error.log").read_text()
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- Kubernetes --------------------------------------------------------------------------


def _deployment() -> dict[str, object]:
    document = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _container() -> dict[str, object]:
    spec = _deployment()["spec"]
    assert isinstance(spec, dict)
    (container,) = spec["template"]["spec"]["containers"]
    return dict(container)


def _secrets_dir(folder: Path, ca: trustme.CA) -> Path:
    """The Secret as the kubelet mounts it: files behind a `..data` symlink, the key
    encrypted with the password stored beside it."""
    secret = yaml.safe_load((KUBERNETES / "secret.yaml").read_text(encoding="utf-8"))
    password = secret["stringData"]["tls.keyfile_password"]
    server = ca.issue_cert("localhost", "127.0.0.1")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
    mount = folder / "secrets"
    data = mount / "..2026_12_01_00_00_00.000000000"
    data.mkdir(parents=True)
    (data / "tls.crt").write_bytes(server.cert_chain_pems[0].bytes())
    (data / "tls.key").write_bytes(encrypted)
    (data / "tls.keyfile_password").write_text(password + "\n")
    (mount / "..data").symlink_to(data.name)
    for name in ("tls.crt", "tls.key", "tls.keyfile_password"):
        (mount / name).symlink_to(f"..data/{name}")
    return mount


def test_the_deployment_probes_match_the_manifest_health_listener() -> None:
    manifest = yaml.safe_load((KUBERNETES / "palfrey.yaml").read_text(encoding="utf-8"))
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}  # type: ignore[attr-defined]
    assert manifest["health"]["listener"].endswith(f":{ports['health']}")
    assert manifest["server"]["port"] == ports["https"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]  # type: ignore[index]
        assert check["port"] == "health"
        assert check["path"] == ("/healthz" if probe == "livenessProbe" else "/readyz")
    grace = _deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]  # type: ignore[index]
    drain = float(manifest["server"]["drain_delay"].rstrip("s"))
    graceful = float(manifest["timeouts"]["graceful_shutdown"].rstrip("s"))
    assert grace > drain + graceful


def test_the_kubernetes_example_answers_its_probes_and_drains(tmp_path: Path) -> None:
    ca = trustme.CA()
    secrets = _secrets_dir(tmp_path, ca)
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(KUBERNETES / "palfrey.yaml", config / "palfrey.yaml")
    env = {item["name"]: item["value"] for item in _container()["env"]}  # type: ignore[attr-defined]
    assert env["PALFREY_CONFIG"] == "/etc/palfrey/palfrey.yaml"
    assert env["PALFREY_SECRETS_DIR"] == "/run/secrets/palfrey"
    env.update(
        PALFREY_CONFIG=str(config / "palfrey.yaml"),
        PALFREY_SECRETS_DIR=str(secrets),
        # Only what a test machine needs: loopback, free ports, the test's TLS paths.
        PALFREY_HOST="127.0.0.1",
        PALFREY_PORT="0",
        PALFREY_HEALTH__LISTENER="127.0.0.1:0",
        PALFREY_TLS__CERTFILE=str(secrets / "tls.crt"),
        PALFREY_TLS__KEYFILE=str(secrets / "tls.key"),
        PALFREY_APP="main:app",
        PALFREY_LOGGING__LEVEL="info",  # the Deployment says warning: the test reads ports
    )
    (tmp_path / "main.py").write_text(
        _block(TUTORIAL, "python").text, encoding="utf-8"
    )  # the image's app
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with PalfreyProcess([], cwd=tmp_path, env=env) as proc:
        proc.wait_for_port(timeout=30)
        proc.wait_for_log("Started worker process", count=4, timeout=60)  # PALFREY_WORKERS=4
        proc.wait_for_log("Health endpoints on", timeout=30)
        (health_port,) = re.findall(r"Health endpoints on http://[\d.]+:(\d+)", proc.log)
        health = f"http://127.0.0.1:{health_port}"
        app = httpx.Client(http2=True, verify=context, timeout=10)
        url = f"https://127.0.0.1:{proc.port}/"
        deadline = time.monotonic() + 60
        while httpx.get(health + "/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, proc.log  # the startup probe's job
            time.sleep(0.1)
        assert httpx.get(health + "/healthz", timeout=5).status_code == 200
        assert app.get(url).http_version == "HTTP/2"
        proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(health + "/readyz", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, proc.log
            time.sleep(0.05)
        # Not ready any more, but still serving during server.drain_delay (5 s).
        assert app.get(url).status_code == 200
        assert httpx.get(health + "/healthz", timeout=5).status_code == 200
        app.close()
        assert proc.wait(60) == 0, proc.log


def test_the_service_selects_the_deployment_pods_and_targets_the_app_port() -> None:
    service = yaml.safe_load((KUBERNETES / "service.yaml").read_text(encoding="utf-8"))
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in _container()["ports"]}  # type: ignore[attr-defined]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
