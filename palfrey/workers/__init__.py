"""The process model: the worker supervisor, manifest and code reloading, and the
gunicorn worker classes.

`palfrey.workers.PalfreyWorker` and `palfrey.workers.PalfreyH11Worker` are imported
lazily, so gunicorn is only needed by those who use them:

    gunicorn main:app -k palfrey.workers.PalfreyWorker -w 2
"""

from __future__ import annotations

from typing import Any

__all__ = ["PalfreyH11Worker", "PalfreyWorker"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from palfrey.workers import gunicorn

        return getattr(gunicorn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
