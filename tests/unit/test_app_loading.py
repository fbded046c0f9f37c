"""App loading: import strings, factories, app_dir and interface detection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from palfrey.asgi.adapters import ASGI2Adapter
from palfrey.asgi.app_loading import AppLoadError, AppSpec, adapt, import_from_string, load_app
from tests.helpers.plans import make_plan


def write_module(tmp_path: Path, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source)


def config(tmp_path: Path, app: str, **extra: Any) -> AppSpec:
    """The app spec the plan makes of these settings."""
    return make_plan([app], app_dir=str(tmp_path), **extra).server.app


def test_dotted_attribute(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "dotted_mod",
        "class Holder:\n    async def app(scope, receive, send):\n        pass\n"
        "holder = Holder()\nholder.inner = Holder\n",
    )
    app = load_app(config(tmp_path, "dotted_mod:Holder.app"))
    assert asyncio.iscoroutinefunction(app)


def test_factory(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "factory_mod",
        "def create():\n    async def app(scope, receive, send):\n        pass\n    return app\n",
    )
    app = load_app(config(tmp_path, "factory_mod:create", factory=True))
    assert app.__name__ == "app"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no_colon", "must be in format"),
        ("missing_module_xyz:app", 'Could not import module "missing_module_xyz"'),
        ("json:nothing", 'Attribute "nothing" not found in module "json"'),
    ],
)
def test_import_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(AppLoadError, match=message):
        import_from_string(text)


def test_error_inside_module_names_it(tmp_path: Path) -> None:
    write_module(tmp_path, "broken_mod", "import not_installed_dependency_xyz\n")
    with pytest.raises(AppLoadError, match="broken_mod"):
        load_app(config(tmp_path, "broken_mod:app"))


def test_interface_detection() -> None:
    async def asgi3(scope: Any, receive: Any, send: Any) -> None:
        pass

    class ASGI2:
        def __init__(self, scope: Any) -> None:
            pass

        async def __call__(self, receive: Any, send: Any) -> None:
            pass

    assert adapt(asgi3) is asgi3
    assert isinstance(adapt(ASGI2), ASGI2Adapter)
    assert isinstance(adapt(asgi3, "asgi2"), ASGI2Adapter)


def test_wsgi_interface() -> None:
    from palfrey.asgi.wsgi import WSGIAdapter

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        return []

    assert isinstance(adapt(wsgi, "wsgi"), WSGIAdapter)


def test_not_callable() -> None:
    with pytest.raises(AppLoadError):
        adapt(42)
