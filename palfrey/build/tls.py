"""TLS: the server SSLContext built from the `tls` section, and the ASGI `tls` scope extension.

Errors are `TLSConfigError`s naming the setting, the file and what is wrong with it, so
`--check-config` and startup can print them as they are.
"""

from __future__ import annotations

import ssl
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from palfrey.config.runtime import TLSSection

__all__ = ["TLSConfigError", "create_ssl_context", "tls_scope_extension"]


class TLSConfigError(Exception):
    """The TLS settings cannot produce a working server context."""


_MINIMUM = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# The server certificate (PEM) of each context we built, for the `server_cert` field of
# the ASGI tls extension: Python cannot read a context's own certificate back.
_SERVER_CERTS: weakref.WeakKeyDictionary[ssl.SSLContext, str] = weakref.WeakKeyDictionary()


def create_ssl_context(
    tls: TLSSection, alpn_protocols: Sequence[str] = ("http/1.1",)
) -> ssl.SSLContext:
    """A server context with modern defaults for the `tls` section (which must be enabled).

    TLS >= `tls.minimum_version` always: uvicorn's `ssl_version` is accepted but cannot
    lower it; the only value it still changes is PROTOCOL_TLSv1_2, which caps the
    maximum at 1.2 as it did in uvicorn (when the minimum allows it).
    """
    if tls.certfile is None:
        raise TLSConfigError("tls.certfile is not set: TLS needs a certificate")
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
    _SERVER_CERTS[context] = _first_pem_certificate(cert_text)
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


def _password(tls: TLSSection) -> str | None:
    if tls.keyfile_password is not None:
        return tls.keyfile_password.get_secret_value()
    if tls.keyfile_password_file is not None:
        path = _readable("tls.keyfile_password_file", tls.keyfile_password_file)
        try:
            # Secret files usually end with a newline (echo, kubectl create secret).
            return path.read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise TLSConfigError(
                f"tls.keyfile_password_file {path}: cannot read it ({exc})"
            ) from None
    return None


def _load_chain(
    context: ssl.SSLContext, tls: TLSSection, certfile: Path, keyfile: Path | None, key_text: str
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


# ------------------------------------------------------------ ASGI tls scope extension

# TLS protocol version numbers as they appear on the wire (RFC 8446 §4.2.1 / RFC 5246).
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

# OpenSSL cipher name -> IANA code. get_ciphers() reports OpenSSL's internal id, whose low
# 16 bits are the two-byte IANA value the ASGI tls extension wants.
_CIPHER_IDS: dict[str, int] = {}

# RFC 4514 §3 short names; other attributes keep the long name Python reports.
_DN_SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def tls_scope_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI `tls` extension dict (asgiref specs/tls.rst, version 0.2) for a connection.

    Call it once per connection after the handshake and share the dict between the
    requests of that connection.
    """
    peer_der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name: str | None = None
    if peer_der:
        chain.append(ssl.DER_cert_to_PEM_cert(peer_der))
        chain.extend(_rest_of_chain(ssl_object, peer_der))
        peer = ssl_object.getpeercert()
        if peer:
            name = _rfc4514(peer.get("subject", ()))
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": _SERVER_CERTS.get(ssl_object.context),
        "client_cert_chain": chain,
        "client_cert_name": name,
        # With verification on, a failed client certificate ends the handshake, so a
        # connection that reaches the app never has an error to report.
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": _cipher_id(ssl_object.context, cipher[0]) if cipher else None,
    }


def _rest_of_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket, peer_der: bytes) -> list[str]:
    # Python 3.13 can read the whole chain the client sent; earlier versions only the leaf.
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        return []
    try:
        rest = [der for der in getter() or [] if isinstance(der, bytes)]
    except (ssl.SSLError, ValueError):
        return []
    if rest and rest[0] == peer_der:
        rest = rest[1:]
    return [ssl.DER_cert_to_PEM_cert(der) for der in rest]


def _cipher_id(context: ssl.SSLContext, name: str) -> int | None:
    if name not in _CIPHER_IDS:
        for entry in context.get_ciphers():
            _CIPHER_IDS.setdefault(entry["name"], entry["id"] & 0xFFFF)
    return _CIPHER_IDS.get(name)


def _rfc4514(subject: Any) -> str:
    # getpeercert() lists RDNs from the most general (C) down; RFC 4514 §2.1 writes them
    # from the last one back. Multi-valued RDNs join with "+".
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{_DN_SHORT_NAMES.get(k, k)}={_escape_dn(v)}" for k, v in rdn))
    return ",".join(rdns)


def _escape_dn(value: str) -> str:
    # RFC 4514 §2.4: escape the specials everywhere, and a leading "#"/space, trailing space.
    out = []
    for char in value:
        if char in ',+"\\<>;=':
            out.append("\\" + char)
        elif char == "\0":
            out.append("\\00")
        else:
            out.append(char)
    text = "".join(out)
    if text.startswith(("#", " ")):
        text = "\\" + text
    if text.endswith(" ") and not text.endswith("\\ "):
        text = text[:-1] + "\\ "
    return text
