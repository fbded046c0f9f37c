"""The documentation of each option: the docstring written under its field in model.py.

Read from the source with `ast` when documentation is asked for (--help, the JSON schema,
the generated reference), not when the model is built: pydantic's own attribute-docstring
extraction reads and tokenizes the source of every model class at import, which was about
a sixth of the cost of reading a configuration at start-up.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from functools import cache

__all__ = ["field_docs"]


@cache
def field_docs() -> dict[tuple[str, str], str]:
    """(model class name, field name) -> the field's docstring, whitespace-normalised."""
    from palfrey.config import model

    tree = ast.parse(inspect.getsource(model))
    docs: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for field, after in itertools.pairwise(body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[(node.name, field.target.id)] = " ".join(after.value.value.split())
    return docs
