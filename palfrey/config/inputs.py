"""The files a configuration was read from, each with a digest of the very bytes read.

The plan cache (palfrey.plan.cache) serves a stored Plan only while every file it was
made from still holds the same bytes. Digesting what the layer read, rather than the file
again afterwards, leaves no window in which an edit made during a start-up could be
stored beside the plan of the previous text. This module loads no pydantic: the serving
process checks digests before deciding whether to validate at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

try:  # the hash itself, without hashlib's OpenSSL bindings (about 11 M instructions)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b

__all__ = ["Input", "decode", "digest", "read_input"]


@dataclass(frozen=True)
class Input:
    """A file the layers read (`digest` of its bytes), or a source whose values must not
    be stored at all (`digest` None: a secrets directory)."""

    path: str
    digest: str | None


def digest(data: bytes) -> str:
    """A 160-bit BLAKE2b digest as hex: collisions are not a concern, and it is cheap."""
    return blake2b(data, digest_size=20).hexdigest()


def decode(data: bytes) -> str:
    """UTF-8 text with universal newlines, as `Path.read_text(encoding="utf-8")` reads it."""
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def read_input(path: Path, inputs: list[Input]) -> str:
    """The text of `path` (OSError as `read_text` raises it), recorded in `inputs`."""
    data = path.read_bytes()
    text = decode(data)  # UnicodeDecodeError before recording: a failed read is no input
    inputs.append(Input(str(path), digest(data)))
    return text
