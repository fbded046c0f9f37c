"""docs/reference/uvicorn-parity.md covers every uvicorn option the model maps, the model
maps every flag of the uvicorn that is installed (uvicorn is a test-only peer), and the
page's source map names, for every parameter of the installed uvicorn's `Config`, code
that exists in uvicorn and in Palfrey."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from palfrey.config.registry import Option, by_uvicorn_param, options

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "uvicorn-parity.md"


def _rows() -> dict[str, str]:
    """The parity table's rows, keyed by their first cell (the uvicorn flag)."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            rows[line.split("|")[1].strip()] = line
    return rows


@pytest.mark.parametrize("option", [o for o in options() if o.uvicorn], ids=lambda o: o.key)
def test_every_uvicorn_option_has_a_row(option: Option) -> None:
    assert option.uvicorn is not None
    flag = "APP" if option.cli_flag is None else option.cli_flag
    matches = [row for first, row in _rows().items() if f"`{flag}`" in first]
    assert matches, f"no row for {flag}"
    row = matches[0]
    for name in (f"UVICORN_{option.uvicorn.param.upper()}", *option.env_names, option.key):
        assert f"`{name}`" in row, f"{flag}: {name} missing"


def test_every_installed_uvicorn_flag_is_mapped() -> None:
    uvicorn_main = pytest.importorskip("uvicorn.main")
    mapped = by_uvicorn_param()
    for param in uvicorn_main.main.params:
        if param.name == "version":
            continue
        assert param.name in mapped, f"uvicorn's {param.opts} has no Palfrey option"
        option = mapped[param.name]
        if option.cli_flag is not None:
            assert option.cli_flag in param.opts


# -- source traceability --------------------------------------------------------------

_REFERENCE = re.compile(r"`((?:uvicorn|palfrey)(?:\.\w+)*):([\w.]+)`")
_SOURCE_HEADER = (
    "| uvicorn parameter | uvicorn implements it in | Palfrey key | Palfrey implements it in |"
)


def _source_rows() -> dict[str, list[str]]:
    """The 'Where each option is implemented' table: parameter -> its four cells."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(_SOURCE_HEADER) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def _resolve(module: str, qualname: str) -> object:
    target: object = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def test_the_pinned_uvicorn_is_installed() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    assert uvicorn.__version__.startswith("0.54."), "the parity page describes uvicorn 0.54"


def test_every_uvicorn_config_parameter_has_a_source_row() -> None:
    config = pytest.importorskip("uvicorn.config")
    parameters = [p for p in inspect.signature(config.Config.__init__).parameters if p != "self"]
    rows = _source_rows()
    missing = [p for p in parameters if p not in rows]
    assert not missing, f"uvicorn's Config has parameters the parity page lacks: {missing}"
    assert set(rows) == {*parameters, "app_dir"}


def test_the_source_rows_name_the_palfrey_key_that_maps_each_parameter() -> None:
    mapped = by_uvicorn_param()
    for parameter, cells in _source_rows().items():
        key = cells[2].strip("`")
        if parameter in mapped:
            assert key == mapped[parameter].key, parameter
        else:
            assert key == "not supported", f"{parameter}: no Palfrey option maps it"
        assert _REFERENCE.search(cells[1]), f"{parameter}: no uvicorn source named"


@pytest.mark.filterwarnings("ignore:.*deprecated")  # importing uvicorn's legacy websockets backend
def test_every_source_reference_on_the_page_exists() -> None:
    pytest.importorskip("uvicorn")
    references = set(_REFERENCE.findall(DOC.read_text(encoding="utf-8")))
    assert len(references) > 50
    broken = []
    for module, qualname in sorted(references):
        try:
            _resolve(module, qualname)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{module}:{qualname} ({exc})")
    assert not broken, "the parity page names code that does not exist:\n" + "\n".join(broken)
