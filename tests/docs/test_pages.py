"""Rules every page follows: it opens with a short plain-language summary, and every
setting and environment variable it names exists (so renaming an option cannot leave a
page pointing at something gone)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from palfrey.config.model import SECTIONS
from palfrey.config.registry import by_flat_env, by_path
from tests.docs.snippets import DOCS, ROOT, pages

SITE_PAGES = [p for p in pages() if p.is_relative_to(DOCS)]
_NOT_PROSE = ("#", "|", "- ", "* ", "+ ", "```", "~~~", "!!!", "<", ">", "    ", "===")


def _summary(page: Path) -> str:
    """The first paragraph after the page's title."""
    lines = page.read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("# "), f"{page.name}: the first line is not a '# Title'"
    paragraph: list[str] = []
    for line in lines[1:]:
        if not paragraph and (not line.strip() or line.startswith("<!--")):
            continue
        if not line.strip():
            break
        paragraph.append(line)
    return " ".join(paragraph)


@pytest.mark.parametrize("page", SITE_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_page_opens_with_a_short_summary(page: Path) -> None:
    summary = _summary(page)
    assert summary, f"{page.relative_to(ROOT)}: no paragraph after the title"
    assert not summary.startswith(_NOT_PROSE), (
        f"{page.relative_to(ROOT)}: start with a plain-language paragraph saying what the "
        f"page is about, before any heading, list, table or code (found {summary[:60]!r})"
    )
    assert not re.match(r"\d+\. ", summary), f"{page.name}: a list is not a summary"
    words = len(summary.split())
    assert 12 <= words <= 110, f"{page.relative_to(ROOT)}: the summary has {words} words"


# ASGI message types read like `section.key` (`http.request`, `websocket.accept`,
# `lifespan.startup`) but are not settings.
_ASGI = frozenset(
    {"request", "response", "disconnect", "accept", "close", "send", "receive", "connect"}
    | {"startup", "shutdown", "http"}
)
# Names that are not settings: mistakes the pages show on purpose, placeholders, file
# and attributes of a `server` object in Python examples.
_DELIBERATE = frozenset(
    {"server.prot", "PALFREY_SERVER__PROT", "PALFREY_WOKERS"}
    | {"PALFREY_X", "PALFREY_SECTION__KEY"}
    | {"server.started", "server.addresses", "server.run"}
)
_KEY = re.compile(r"^(" + "|".join(SECTIONS) + r")\.([a-z_][a-z0-9_]*)\b")
_FILE = re.compile(r"\.(py|toml|ya?ml|json|md|conf|crt|key|pem)$")
_ENV = re.compile(r"\bPALFREY_[A-Z0-9_]*[A-Z0-9]\b")
_META_ENV = frozenset({"PALFREY_CONFIG", "PALFREY_SECRETS_DIR"})


def _valid_env(name: str) -> bool:
    if name in _META_ENV or name in by_flat_env() or name in _DELIBERATE:
        return True
    rest = name.removeprefix("PALFREY_")
    if rest.lower() in SECTIONS:
        return True  # a whole section as JSON
    return tuple(part.lower() for part in rest.split("__")) in by_path()


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_settings_a_page_names_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    unknown = []
    for span in re.findall(r"`([^`\n]+)`", text):
        if _FILE.search(span):
            continue  # a file name such as `server.py` or `tls.crt`
        found = _KEY.match(span)
        if found and found.group(2) not in _ASGI:
            key = f"{found.group(1)}.{found.group(2)}"
            if key not in _DELIBERATE and tuple(key.split(".")) not in by_path():
                unknown.append(key)
    unknown += [name for name in _ENV.findall(text) if not _valid_env(name)]
    assert not unknown, f"{page.relative_to(ROOT)} names settings that do not exist: {unknown}"


_PLACEHOLDER = re.compile(r"^\s*(?:[A-Z][A-Z0-9]*_)+[A-Z0-9]+\s*$|\b(?:TODO|TBD|FIXME)\b")


@pytest.mark.parametrize("page", SITE_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_no_page_holds_a_placeholder(page: Path) -> None:
    """A line that is only an upper-case token (RESULTS_WRK) or a TODO is a figure or a
    paragraph someone meant to fill in; outside code blocks, none may reach the site."""
    found = []
    fenced = False
    for number, line in enumerate(page.read_text(encoding="utf-8").split("\n"), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced and _PLACEHOLDER.search(line):
            found.append(f"line {number}: {line.strip()}")
    assert not found, f"{page.relative_to(ROOT)} has placeholders: {found}"
