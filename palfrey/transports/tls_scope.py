"""The ASGI `tls` scope extension (asgiref specs/tls.rst, version 0.2) of a connection."""

from __future__ import annotations

import ssl
import weakref
from typing import Any

__all__ = ["remember_server_cert", "tls_scope_extension"]

# The server certificate (PEM) of each context built, for the `server_cert` field of the
# extension: Python cannot read a context's own certificate back.
_SERVER_CERTS: weakref.WeakKeyDictionary[ssl.SSLContext, str] = weakref.WeakKeyDictionary()


def remember_server_cert(context: ssl.SSLContext, pem: str) -> None:
    """Record the certificate `context` serves (called whenever one is loaded into it)."""
    _SERVER_CERTS[context] = pem


def server_cert(context: ssl.SSLContext) -> str | None:
    return _SERVER_CERTS.get(context)


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
