"""docs/reference/uvicorn-parity.md covers every uvicorn option the model maps, and the
model maps every flag of the uvicorn that is installed (uvicorn is a test-only peer)."""

from __future__ import annotations

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
