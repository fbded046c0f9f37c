"""A secret setting (a key password) as a Plan holds it: pydantic's SecretStr without
pydantic, so a serving process, which unpickles Plans, never imports it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Secret"]


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A string that is never printed: `get_secret_value()` reads it, as on SecretStr;
    `repr()` and `str()` show asterisks. Compares and hashes by value, as SecretStr does."""

    _value: str

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"
