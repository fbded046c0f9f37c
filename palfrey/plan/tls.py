"""TLS: the `tls` section as the plan keeps it (`TLSSpec`) and the server SSLContext built
from it.

Errors are `TLSConfigError`s naming the setting, the file and what is wrong with it, so
`--check-config` and startup can print them as they are.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palfrey.plan.plan import TLSSpec
from palfrey.transports.tls_scope import remember_server_cert, server_cert

if TYPE_CHECKING:
    from palfrey.protocols.settings import HTTP3Settings

__all__ = ["TLSConfigError", "create_quic_configuration", "create_ssl_context", "reload_in_place"]


class TLSConfigError(Exception):
    """The TLS settings cannot produce a working server context."""


_MINIMUM = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def create_ssl_context(
    tls: TLSSpec, alpn_protocols: Sequence[str] = ("http/1.1",)
) -> ssl.SSLContext:
    """A server context with modern defaults for `tls`.

    TLS >= `tls.minimum_version` always: uvicorn's `ssl_version` is accepted but cannot
    lower it; the only value it still changes is PROTOCOL_TLSv1_2, which caps the
    maximum at 1.2 as it did in uvicorn (when the minimum allows it).
    """
    certfile = _readable("tls.certfile", tls.certfile)
    keyfile = _readable("tls.keyfile", tls.keyfile) if tls.keyfile is not None else None
    cert_text = _read_text("tls.certfile", certfile)
    key_text = _read_text("tls.keyfile", keyfile) if keyfile is not None else cert_text
    _check_pem("tls.certfile", certfile, cert_text, "CERTIFICATE-----")
    _check_pem(
        "tls.keyfile" if keyfile else "tls.certfile",
        keyfile or certfile,
        key_text,
        "PRIVATE KEY-----",
    )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MINIMUM[tls.minimum_version]
    if tls.version == int(ssl.PROTOCOL_TLSv1_2) and tls.minimum_version == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    # No TLS compression (CRIME); no renegotiation (a client-triggered CPU sink, and
    # TLS 1.3 has none). Prefer our cipher order: ours are the modern ones.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    # Sessions: OpenSSL's server session cache and tickets stay on (cheap resumption);
    # CPython sets the session id context, so resumption also works with client certs.
    # Two TLS 1.3 tickets per handshake, OpenSSL's default, spelled out.
    context.num_tickets = 2

    _load_chain(context, tls, certfile, keyfile, key_text)
    if tls.ca_certs is not None:
        cafile = _readable("tls.ca_certs", tls.ca_certs)
        try:
            context.load_verify_locations(cafile=str(cafile))
        except ssl.SSLError as exc:
            raise TLSConfigError(
                f"tls.ca_certs {cafile}: not a PEM bundle of CA certificates ({_ssl_reason(exc)})"
            ) from None
    context.verify_mode = ssl.VerifyMode(tls.cert_reqs)
    if tls.ciphers:
        try:
            context.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise TLSConfigError(
                f"tls.ciphers {tls.ciphers!r} selects no cipher this OpenSSL supports"
            ) from None
    if alpn_protocols:
        context.set_alpn_protocols(list(alpn_protocols))
    remember_server_cert(context, _first_pem_certificate(cert_text))
    return context


def _readable(key: str, path: Path) -> Path:
    if not path.exists():
        raise TLSConfigError(f"{key} {path}: no such file")
    if not path.is_file():
        raise TLSConfigError(f"{key} {path}: not a regular file")
    return path


def _read_text(key: str, path: Path) -> str:
    try:
        return path.read_bytes().decode("ascii", errors="replace")
    except OSError as exc:
        raise TLSConfigError(f"{key} {path}: cannot read it ({exc.strerror or exc})") from None


def _check_pem(key: str, path: Path, text: str, marker: str) -> None:
    # Checked by hand because OpenSSL reports a missing or DER-encoded file as "PEM lib".
    if "-----BEGIN " not in text or marker not in text:
        kind = "certificate" if marker.startswith("CERT") else "private key"
        raise TLSConfigError(f"{key} {path}: no PEM {kind} found in the file")


def _password(tls: TLSSpec) -> str | None:
    if tls.password is not None:
        return tls.password.get_secret_value()
    if tls.password_file is not None:
        path = _readable("tls.keyfile_password_file", tls.password_file)
        try:
            # Secret files usually end with a newline (echo, kubectl create secret).
            return path.read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise TLSConfigError(
                f"tls.keyfile_password_file {path}: cannot read it ({exc})"
            ) from None
    return None


def _load_chain(
    context: ssl.SSLContext, tls: TLSSpec, certfile: Path, keyfile: Path | None, key_text: str
) -> None:
    password = _password(tls)
    asked: list[bool] = []

    def supply() -> str:
        # A callable, never None: with None OpenSSL would prompt on the terminal for the
        # password of an encrypted key, hanging a server started by a supervisor.
        asked.append(True)
        return password or ""

    key_name = f"tls.keyfile {keyfile}" if keyfile else f"tls.certfile {certfile}"
    try:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None, supply)
    except ssl.SSLError as exc:
        reason = _ssl_reason(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in reason:
            raise TLSConfigError(
                f"{key_name}: the private key does not match the certificate in "
                f"tls.certfile {certfile}"
            ) from None
        encrypted = "ENCRYPTED" in key_text
        if encrypted and password is None:
            raise TLSConfigError(
                f"{key_name}: the private key is encrypted; set tls.keyfile_password_file "
                "(or tls.keyfile_password)"
            ) from None
        if encrypted or (asked and password is not None):
            raise TLSConfigError(f"{key_name}: wrong password for the private key") from None
        raise TLSConfigError(
            f"{key_name}: cannot load the certificate chain and key ({reason})"
        ) from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).replace("_", " ").lower()


def _first_pem_certificate(text: str) -> str:
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end_marker = "-----END CERTIFICATE-----"
    end = text.find(end_marker, begin)
    return text[begin : end + len(end_marker)] + "\n"


def reload_in_place(context: ssl.SSLContext, tls: TLSSpec) -> None:
    """Load renewed certificate files into the live `context`: new handshakes use them,
    established connections are untouched. Validates first by building a complete new
    context, so a half-written or mismatched pair leaves the old certificate serving.
    Raises TLSConfigError or ssl.SSLError."""
    fresh = create_ssl_context(tls)
    password = _password(tls)
    context.load_cert_chain(
        str(tls.certfile),
        str(tls.keyfile) if tls.keyfile is not None else None,
        password=lambda: password or "",
    )
    if tls.ca_certs is not None:
        context.load_verify_locations(cafile=str(tls.ca_certs))
    pem = server_cert(fresh)
    if pem is not None:  # the ASGI `tls` extension's server_cert
        remember_server_cert(context, pem)


def create_quic_configuration(tls: TLSSpec, settings: HTTP3Settings) -> Any:
    """aioquic's server QuicConfiguration for `tls` and the `http3` section. The files are
    checked as for TCP first (create_ssl_context), so a bad certificate gets the same
    message whichever listener reads it. QUIC always runs TLS 1.3 (RFC 9001 §4.2), so
    `tls.minimum_version` and the TLS 1.2 `tls.ciphers` do not apply to it."""
    create_ssl_context(tls, ("h3",))
    from aioquic.quic.configuration import QuicConfiguration

    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=["h3"],
        idle_timeout=settings.idle_timeout,
        max_data=settings.max_data,
        max_stream_data=settings.max_stream_data,
        congestion_control_algorithm=settings.congestion_control,
    )
    _load_quic_chain(configuration, tls)
    return configuration


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\r?\n?", re.DOTALL)


def _load_quic_chain(configuration: Any, tls: TLSSpec) -> None:
    # aioquic's load_cert_chain finds a key in the certificate file only as an
    # unencrypted PKCS#8 block after the certificates; read the PEM blocks here instead,
    # in any order and any key format OpenSSL took (the context above loaded them).
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert_data = tls.certfile.read_bytes()
    key_data = cert_data if tls.keyfile is None else tls.keyfile.read_bytes()
    certificates = [
        x509.load_pem_x509_certificate(match.group(0))
        for match in _PEM_BLOCK.finditer(cert_data)
        if match.group(1) == b"CERTIFICATE"
    ]
    key = next(
        (m.group(0) for m in _PEM_BLOCK.finditer(key_data) if m.group(1).endswith(b"PRIVATE KEY")),
        None,
    )
    if not certificates or key is None:
        raise TLSConfigError(f"tls.certfile {tls.certfile}: no certificate and key for QUIC")
    password = _password(tls)
    try:
        configuration.private_key = load_pem_private_key(
            key, password=None if password is None else password.encode()
        )
    except (TypeError, ValueError) as exc:
        raise TLSConfigError(f"the private key cannot be used for QUIC ({exc})") from None
    configuration.certificate = certificates[0]
    configuration.certificate_chain = certificates[1:]
