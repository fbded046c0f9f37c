"""Comma-separated list fields (RFC 9110 §5.6.1): the one reading of Connection, Upgrade
and every other list field, shared by HTTP/1.1 framing, h2c and WebSocket negotiation.
Imports nothing from Palfrey, so any protocol module can use it."""

from __future__ import annotations

__all__ = ["field_has_token", "tokens"]


def tokens(value: bytes) -> list[bytes]:
    """The elements of a comma-separated list field value, lower-cased (RFC 9110 §5.6.1:
    OWS around each element, empty elements ignored)."""
    return [token for token in (part.strip(b" \t").lower() for part in value.split(b",")) if token]


def field_has_token(headers: list[tuple[bytes, bytes]], name: bytes, token: bytes) -> bool:
    """Whether any `name` field (names lower-case) lists `token` (RFC 9110 §5.3: repeated
    fields combine into one list)."""
    return any(token in tokens(value) for field, value in headers if field == name)
