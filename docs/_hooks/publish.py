"""MkDocs hook: publish the JSON schema and the example configurations with the site.

Editors can then point at `<site>/palfrey.schema.json`, and pages can link to the example
files (`examples/configs/production.toml`) as downloads. The files are the committed ones
(tests check they validate and load), not copies that could drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = {
    "palfrey.schema.json": ROOT / "schemas" / "palfrey.schema.json",
    **{
        path.relative_to(ROOT).as_posix(): path
        for path in sorted((ROOT / "examples" / "configs").rglob("*"))
        if path.is_file() and path.suffix != ".md"  # a .md would become a page
    },
}


def on_files(files: Files, config: Any, **_: Any) -> Files:
    for uri, path in PUBLISHED.items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
