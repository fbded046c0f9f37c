"""The field layout of the dataclasses in a pickled object graph.

Dataclasses unpickle field by field, so a Plan pickled by other code (a re-exec after an
upgrade in place, a cached plan) would silently miss or misplace values if a class
changed. Recording each class's field names beside the pickle, and comparing them with
this code's before unpickling, turns that into "validate again".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

__all__ = ["Layout", "layout_of", "same_layout"]

Layout = dict[str, tuple[str, ...]]


def _dataclasses(value: Any) -> Iterator[type]:
    """Every dataclass type in `value`'s object graph (what pickling it records)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield type(value)
        for item in dataclasses.fields(value):
            yield from _dataclasses(getattr(value, item.name))
    elif isinstance(value, (tuple, list, frozenset, set)):
        for item in value:
            yield from _dataclasses(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _dataclasses(item)


def layout_of(value: Any) -> Layout:
    """Field names by "module:qualname" of every dataclass in `value`."""
    return {
        f"{cls.__module__}:{cls.__qualname__}": tuple(f.name for f in dataclasses.fields(cls))
        for cls in _dataclasses(value)
    }


def same_layout(layout: Layout) -> bool:
    """Whether this code's classes have the fields that were pickled."""
    import importlib

    for name, fields in layout.items():
        module, _, qualname = name.partition(":")
        try:
            cls: Any = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError):
            return False
        if not dataclasses.is_dataclass(cls):
            return False
        if tuple(f.name for f in dataclasses.fields(cls)) != fields:
            return False
    return True
