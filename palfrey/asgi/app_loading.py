"""Finding the application: import strings, factories, app_dir and the interface.

`load_app(spec)` returns an ASGI 3 callable whatever the app is (ASGI 3, ASGI 2 or
WSGI). Failures are AppLoadError with a one-line message the CLI prints before exiting 1,
without a traceback for the common mistakes (no such module or attribute).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from typing import TYPE_CHECKING, Any

from palfrey.asgi.adapters import ASGI2Adapter
from palfrey.asgi.settings import AppSpec

if TYPE_CHECKING:
    from palfrey.asgi.types import ASGIApp


class AppLoadError(Exception):
    """The app named in the config cannot be imported or used."""


def import_from_string(text: str) -> Any:
    """`"package.module:attr.sub"` -> the object it names."""
    module_name, sep, attrs = text.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(f'Import string "{text}" must be in format "<module>:<attribute>".')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise AppLoadError(f'Could not import module "{module_name}".') from None
        raise AppLoadError(f'Error importing module "{module_name}": {exc}') from exc
    except Exception as exc:
        raise AppLoadError(
            f'Error importing module "{module_name}": {type(exc).__name__}: {exc}'
        ) from exc
    obj: Any = module
    try:
        for attr in attrs.split("."):
            obj = getattr(obj, attr)
    except AttributeError:
        raise AppLoadError(f'Attribute "{attrs}" not found in module "{module_name}".') from None
    return obj


def load_app(spec: AppSpec) -> ASGIApp:
    """Import `spec.target` (from `spec.app_dir`), call it if a factory, adapt it."""
    if not spec.target:
        raise AppLoadError("no app given: pass APP, or set 'app' or PALFREY_APP")
    app_dir = spec.app_dir
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    app = import_from_string(spec.target)
    if spec.factory:
        if not callable(app):
            raise AppLoadError(f'The factory "{spec.target}" is not callable.')
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(
                f'Error calling the factory "{spec.target}": {type(exc).__name__}: {exc}'
            ) from exc
    return adapt(app, spec.interface)


def adapt(app: Any, interface: str = "auto") -> ASGIApp:
    """Wrap an app of the given interface ("auto" detects ASGI 3 vs ASGI 2) as ASGI 3."""
    if not callable(app):
        raise AppLoadError(f"The app {app!r} is not callable.")
    if interface == "auto":
        interface = "asgi3" if _looks_asgi3(app) else "asgi2"
    if interface == "asgi2":
        return ASGI2Adapter(app)
    if interface == "wsgi":
        from palfrey.asgi.wsgi import WSGIAdapter

        return WSGIAdapter(app)
    return app  # type: ignore[no-any-return]


def _looks_asgi3(app: Any) -> bool:
    # As uvicorn decides: ASGI 2 apps are classes constructed with the scope, or plain
    # callables returning an awaitable instance; ASGI 3 apps are coroutine functions.
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.isfunction(app) or inspect.ismethod(app):
        return asyncio.iscoroutinefunction(app)
    call = getattr(app, "__call__", None)  # noqa: B004 - we want the bound __call__
    return asyncio.iscoroutinefunction(call)
