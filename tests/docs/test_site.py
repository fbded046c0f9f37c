"""The site builds with `mkdocs build --strict` (broken links, missing anchors and pages
left out of the nav are failures), and every internal link and anchor in the built HTML
resolves, including those mkdocs does not see (in raw HTML, generated navigation, pages
included with snippets).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.docs.snippets import DOCS, ROOT

pytestmark = pytest.mark.slow


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("id", "name"):
            if values.get(name):
                self.ids.add(str(values[name]))
        for name in ("href", "src"):
            if values.get(name) and not (tag == "link" and values.get("rel") == "preconnect"):
                self.links.append(str(values[name]))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail('mkdocs is not installed: pip install -e ".[docs]"')
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(target)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def _pages(site: Path) -> Iterator[Path]:
    # 404.html is served for any missing URL, so its links are absolute from the site
    # root (which a local build does not know); every other page links relatively.
    yield from sorted(p for p in site.rglob("*.html") if p.name != "404.html")


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _target(site: Path, page: Path, link: str) -> tuple[Path, str] | None:
    """The file and fragment an internal link points to; None for external links."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("mailto:", "data:", "javascript:")):
        return None
    path = unquote(parts.path)
    if not path:
        return page, parts.fragment
    target = (page.parent / path).resolve()
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, parts.fragment


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    parsed = {path.resolve(): _parse(path) for path in _pages(site)}
    broken = []
    for path, page in parsed.items():
        for link in page.links:
            found = _target(site, path, link)
            if found is None:
                continue
            target, fragment = found
            where = f"{path.relative_to(site.resolve())}: {link}"
            if not target.is_file():
                broken.append(f"{where} (no such file)")
            elif fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if fragment not in ids:
                    broken.append(f"{where} (no anchor #{fragment})")
    assert not broken, "\n".join(broken)


def test_every_page_is_built_and_in_the_navigation(site: Path) -> None:
    sources = [p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts]
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for source in sources:
        relative = source.relative_to(DOCS).as_posix()
        assert f": {relative}\n" in nav, f"{relative} is not in mkdocs.yml's nav"
        built = relative.removesuffix(".md")
        built = "index.html" if built == "index" else f"{built}/index.html"
        assert (site / built).is_file(), built


def test_the_schema_and_examples_are_published(site: Path) -> None:
    assert (site / "palfrey.schema.json").read_bytes() == (
        ROOT / "schemas" / "palfrey.schema.json"
    ).read_bytes()
    assert (site / "examples" / "configs" / "production.toml").is_file()


def test_diagrams_are_rendered_as_mermaid(site: Path) -> None:
    html = (site / "concepts" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<pre class="mermaid"><code>flowchart', html)
