"""The documentation's code blocks and commands, read the way the tests check them.

A block is a fenced code block in a page of the site (`docs/**/*.md`), in README.md or in
examples/configs/kubernetes/README.md. The line right above its opening fence may hold a
marker that says what the block is; without one, the language decides
(tests/docs/test_snippets.py says how each language is checked):

    <!-- docs: file=palfrey.toml -->   also write the block to the page's scratch
                                       directory under that name, for later commands
    <!-- docs: data -->                a file's content, not a manifest (with file=)
    <!-- docs: invalid -->             a manifest that Palfrey must refuse
    <!-- docs: kubernetes -->          Kubernetes YAML, also a fragment of an object
    <!-- docs: run -->                 a Python program the tests execute; on a console
                                       transcript: run it although it starts Palfrey
                                       (its commands end by themselves)
    <!-- docs: skip -- reason -->      not checked; the reason is required

`--8<-- "path"` lines inside a block (pymdownx.snippets) are replaced by the file they
name, as the site shows them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXTRA_PAGES = (ROOT / "README.md", ROOT / "examples" / "configs" / "kubernetes" / "README.md")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)[^\n]*$")
_MARKER = re.compile(r"^\s*<!--\s*docs:\s*(?P<body>.*?)\s*-->\s*$")
_SNIPPET = re.compile(r"^\s*--8<--\s+\"(?P<path>[^\"]+)\"\s*$")
_KNOWN_MARKERS = frozenset({"file", "data", "invalid", "kubernetes", "run", "skip"})


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, text and marker."""

    page: Path
    line: int
    lang: str
    text: str
    marker: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def skipped(self) -> bool:
        return "skip" in self.marker

    @property
    def file(self) -> str | None:
        return self.marker.get("file")


def pages() -> list[Path]:
    """Every page of the site (docs/, without the build hooks) and the READMEs."""
    found = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)
    return [*found, *EXTRA_PAGES]


def parse_marker(body: str) -> dict[str, str]:
    """`file=x.toml data` -> {"file": "x.toml", "data": ""}; `skip -- why` -> {"skip": "why"}."""
    options, _, reason = body.partition(" -- ")
    marker: dict[str, str] = {}
    for token in options.split():
        key, _, value = token.partition("=")
        if key not in _KNOWN_MARKERS:
            raise ValueError(f"unknown docs marker {key!r} in <!-- docs: {body} -->")
        marker[key] = value
    if "skip" in marker:
        if not reason.strip():
            raise ValueError("<!-- docs: skip --> needs a reason: <!-- docs: skip -- why -->")
        marker["skip"] = reason.strip()
    return marker


def _expand_snippets(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        found = _SNIPPET.match(line)
        if found:
            text = (ROOT / found.group("path")).read_text(encoding="utf-8")
            out.extend(text.rstrip("\n").split("\n"))
        else:
            out.append(line)
    return out


@cache
def blocks_of(page: Path) -> tuple[Block, ...]:
    """The fenced blocks of `page`, in order."""
    lines = page.read_text(encoding="utf-8").split("\n")
    result: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = lines[index].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        index += 1
        marker: dict[str, str] = {}
        previous = lines[start - 1] if start > 0 else ""
        found = _MARKER.match(previous)
        if found:
            marker = parse_marker(found.group("body"))
        text = "\n".join(_expand_snippets(body))
        lang = opening.group("lang").lower()
        result.append(Block(page, start + 1, lang, text + "\n", marker))
    return tuple(result)


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks_of(page)]


# -- shell command lines ---------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One simple command from a shell line: `VAR=x palfrey --port 1` -> env and argv."""

    env: dict[str, str]
    argv: list[str]

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name if self.argv else ""

    @property
    def palfrey_args(self) -> list[str] | None:
        """The arguments when this runs Palfrey (`palfrey ...` or `python -m palfrey ...`)."""
        if self.program == "palfrey":
            return self.argv[1:]
        if self.program.startswith("python") and self.argv[1:3] == ["-m", "palfrey"]:
            return self.argv[3:]
        return None


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")"})


def logical_lines(text: str) -> Iterator[str]:
    """Lines with backslash continuations joined."""
    pending = ""
    for raw in text.split("\n"):
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        yield pending + raw
        pending = ""
    if pending:
        yield pending


def commands(line: str) -> list[Command]:
    """The simple commands of one shell line (split at `&&`, `|`, `;`, comments removed)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: not a command line we can judge
        return []
    found: list[Command] = []
    current: list[str] = []
    for token in [*tokens, ";"]:
        if token in _SEPARATORS or set(token) <= set(";&|"):
            if current:
                found.append(_command(current))
            current = []
        else:
            current.append(token)
    return found


_SUDO_ARGS = frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t"})


def _command(tokens: list[str]) -> Command:
    """Leading `VAR=value` words become the environment; `sudo [-u user]` is dropped."""
    env: dict[str, str] = {}
    while tokens:
        if _ASSIGNMENT.match(tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            env[name] = value
        elif tokens[0] == "sudo":
            tokens.pop(0)
            while tokens and tokens[0].startswith("-"):
                if tokens.pop(0) in _SUDO_ARGS and tokens:
                    tokens.pop(0)
        else:
            break
    return Command(env, tokens)


def shell_commands(text: str) -> list[Command]:
    """Every simple command in a shell block (bash, sh, shell)."""
    return [cmd for line in logical_lines(text) for cmd in commands(line)]


@dataclass
class Step:
    """One `$ command` of a console transcript and the output shown under it."""

    command: str
    output: list[str]


def transcript(text: str) -> list[Step]:
    """A console block as `$ command` steps, each with the output lines below it."""
    steps: list[Step] = []
    continuing = False
    for raw in text.rstrip("\n").split("\n"):
        if continuing and steps:
            steps[-1].command += "\n" + raw
            continuing = raw.rstrip().endswith("\\")
            continue
        if raw.startswith("$ "):
            steps.append(Step(raw[2:], []))
            continuing = raw.rstrip().endswith("\\")
        elif steps:
            steps[-1].output.append(raw)
    return steps


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` lines match `expected`, where a line `...` stands for any lines."""
    want = [line.rstrip() for line in expected]
    got = [line.rstrip() for line in actual]

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(got)
        if want[i] == "...":
            return any(match(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and want[i] == got[j] and match(i + 1, j + 1)

    return match(0, 0)
