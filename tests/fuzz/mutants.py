"""Mutation checks for the harness: a copy of a Palfrey module with one piece of source
replaced, loaded as a separate module, so a test can show that the harness fails when a
check is skipped (and so that the check, however cheap, is needed and complete)."""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any


def mutant(module_name: str, old: str, new: str) -> types.ModuleType:
    """`module_name` with the one occurrence of `old` in its source replaced by `new`."""
    module = importlib.import_module(module_name)
    source = inspect.getsource(module)
    assert source.count(old) == 1, f"{old!r} must occur exactly once in {module_name}"
    name = f"{module_name}_mutant"
    copy = types.ModuleType(name)
    copy.__file__ = module.__file__
    sys.modules[name] = copy
    try:
        exec(compile(source.replace(old, new), f"<mutant of {module_name}>", "exec"), copy.__dict__)
    finally:
        del sys.modules[name]
    return copy


def classes(**overrides: Any) -> dict[str, Any]:
    """Protocol classes by backend for `Driver(classes=...)`."""
    from palfrey.protocols.http11_h11 import H11Connection
    from palfrey.protocols.http11_httptools import HTTPToolsConnection

    return {"h11": H11Connection, "httptools": HTTPToolsConnection, **overrides}
