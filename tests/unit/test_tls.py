"""create_ssl_context() errors and defaults, and real handshakes against an asyncio TLS
server built with it (trustme CA), with and without client-certificate verification."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from palfrey.plan.plan import TLSSpec
from palfrey.plan.tls import TLSConfigError, create_ssl_context
from tests.helpers.plans import make_plan

TIMEOUT = 10


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files on disk: server cert/key, a client cert (chain), CA bundle, odd variants."""
    root = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    other = ca.issue_cert("other.example")
    intermediate = ca.create_child_ca()
    client = intermediate.issue_cert("client.example", common_name="client, one")
    files = {
        "cert": server.cert_chain_pems[0].bytes(),
        "key": server.private_key_pem.bytes(),
        "combined": server.private_key_and_cert_chain_pem.bytes(),
        "other_key": other.private_key_pem.bytes(),
        "ca": ca.cert_pem.bytes(),
        "client": client.private_key_and_cert_chain_pem.bytes(),
        "client_leaf": client.cert_chain_pems[0].bytes(),
        "garbage": b"this is not PEM\n",
        "encrypted_key": _encrypt(server.private_key_pem.bytes(), b"s3cret"),
        "password": b"s3cret\n",
        "wrong_password": b"nope\n",
    }
    paths = {}
    for name, data in files.items():
        path = root / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return paths


def _encrypt(key_pem: bytes, password: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )


def _section(pki: dict[str, Path], **overrides: Any) -> TLSSpec:
    values: dict[str, Any] = {"certfile": pki["cert"], "keyfile": pki["key"], **overrides}
    return _tls(**values)


def _tls(**values: Any) -> TLSSpec:
    """The TLS spec the plan makes of this `tls` section."""
    spec = make_plan(tls=values).tls
    assert spec is not None
    return spec


# ------------------------------------------------------------------- context and errors


def test_defaults(pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki), alpn_protocols=("h2", "http/1.1"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.verify_mode == ssl.CERT_NONE
    assert context.num_tickets == 2


def test_minimum_13(pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki, minimum_version="1.3"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_lower_uvicorn_version_is_ignored(pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki, version=int(ssl.PROTOCOL_TLSv1)))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_uvicorn_tlsv1_2_pin_caps_maximum(pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki, version=int(ssl.PROTOCOL_TLSv1_2)))
    assert context.maximum_version == ssl.TLSVersion.TLSv1_2


def test_key_inside_certfile(pki: dict[str, Path]) -> None:
    create_ssl_context(_tls(certfile=pki["combined"]))


def test_client_verification(pki: dict[str, Path]) -> None:
    context = create_ssl_context(_section(pki, ca_certs=pki["ca"], cert_reqs="required"))
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"certfile": "missing.pem"}, r"^tls.certfile missing.pem: no such file$"),
        ({"keyfile": "missing-key.pem"}, r"^tls.keyfile missing-key.pem: no such file$"),
        ({"certfile": "garbage"}, r"tls.certfile .*garbage.pem: no PEM certificate found"),
        ({"keyfile": "garbage"}, r"tls.keyfile .*garbage.pem: no PEM private key found"),
        ({"keyfile": "other_key"}, r"does not match the certificate in tls.certfile"),
        ({"keyfile": "encrypted_key"}, r"the private key is encrypted; set tls.keyfile_pass"),
        (
            {"keyfile": "encrypted_key", "keyfile_password_file": "wrong_password"},
            r"tls.keyfile .*encrypted_key.pem: wrong password",
        ),
        (
            {"keyfile": "encrypted_key", "keyfile_password": "bad"},
            r"wrong password for the private key",
        ),
        ({"ca_certs": "garbage"}, r"tls.ca_certs .*garbage.pem: not a PEM bundle"),
        ({"ciphers": "NO-SUCH-CIPHER"}, r"tls.ciphers 'NO-SUCH-CIPHER' selects no cipher"),
        ({"keyfile_password_file": "missing.txt"}, r"tls.keyfile_password_file missing.txt"),
    ],
)
def test_errors_name_the_file_and_problem(
    pki: dict[str, Path], overrides: dict[str, Any], message: str
) -> None:
    # File values name an entry of `pki`; anything else is used as given.
    values = {key: pki.get(value, value) for key, value in overrides.items()}
    with pytest.raises(TLSConfigError, match=message):
        create_ssl_context(_section(pki, **values))


def test_no_certfile_means_no_tls() -> None:
    plan = make_plan()
    assert plan.tls is None
    assert all(listener.tls is None and listener.alpn == () for listener in plan.listeners)


@pytest.mark.parametrize("source", ["file", "secret"])
def test_encrypted_key_with_password(pki: dict[str, Path], source: str) -> None:
    extra: dict[str, Any] = (
        {"keyfile_password_file": pki["password"]}  # trailing newline stripped
        if source == "file"
        else {"keyfile_password": "s3cret"}
    )
    create_ssl_context(_section(pki, keyfile=pki["encrypted_key"], **extra))


def test_rfc4514_escaping() -> None:
    from palfrey.transports.tls_scope import _rfc4514

    subject = (
        (("countryName", "GB"),),
        (("organizationName", "A+B, Inc"),),
        (("commonName", " #lead"), ("emailAddress", "x@y")),
    )
    assert _rfc4514(subject) == "CN=\\ #lead+emailAddress=x@y,O=A\\+B\\, Inc,C=GB"


def test_the_model_spells_the_ssl_constants_as_the_ssl_module_does() -> None:
    from palfrey.config import model

    assert int(ssl.PROTOCOL_TLS_SERVER) == model.PROTOCOL_TLS_SERVER
    assert {
        "none": int(ssl.CERT_NONE),
        "optional": int(ssl.CERT_OPTIONAL),
        "required": int(ssl.CERT_REQUIRED),
    } == model._CERT_REQS
