"""The HTTP/1.1 differential fuzz harness (tests/fuzz), the part that runs in CI.

The real protocol classes of both backends are driven in memory (no socket, nothing of
h11 or httptools mocked) with a fixed-seed mutation corpus: each stream whole, split into
two reads and into three, checked against each other and against h11's reading of the
stream (tests/fuzz/check.py lists the checks). The long run is
`python -m tests.fuzz --seed N --cases M` (docs/explanation/http11-core.md).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests.fuzz.check import Finding, check, choose_cuts, choose_triples
from tests.fuzz.corpus import REPRODUCERS, generate
from tests.fuzz.driver import Driver
from tests.fuzz.mutants import classes, mutant

SEED = 20260
CASES = 2000
CHUNKS = 10
#: Random offsets per case besides those next to CR/LF, and three-read splits per case.
SPLITS, TRIPLES = 3, 2
#: Cases (the reproducers first) that are split at every offset.
EVERY_OFFSET = 40


@pytest.fixture(scope="module")
def driver() -> Iterator[Driver]:
    running = Driver()
    yield running
    running.close()


def _report(findings: list[Finding]) -> str:
    shown = "\n".join(str(finding) for finding in findings[:5])
    return f"{len(findings)} findings; the first ones:\n{shown}"


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fuzz_corpus(chunk: int, driver: Driver) -> None:
    rng = random.Random(SEED + chunk)
    findings: list[Finding] = []
    for index, data in enumerate(generate(SEED, CASES)):
        if index % CHUNKS != chunk:
            continue
        every = index < EVERY_OFFSET
        cuts = choose_cuts(data, None if every else SPLITS, rng)
        triples = choose_triples(data, 64 if index < len(REPRODUCERS) else TRIPLES, rng)
        findings += check(driver, data, cuts, triples)
    assert not findings, _report(findings)


def test_the_corpus_is_fixed_by_its_seed() -> None:
    first = list(generate(SEED, 200))
    assert first == list(generate(SEED, 200))
    assert first[: len(REPRODUCERS)] == list(REPRODUCERS)
    assert len(set(first)) > 180  # mutations make nearly every case distinct


# Each cheap check, skipped in a copy of its module; the harness must notice.
_MUTANTS = [
    pytest.param(
        "palfrey.protocols.http11_httptools",
        'eol != len(method) + len(url) + 10 or head[eol - 8 : eol - 4] != b"HTTP"',
        "False",
        "httptools",
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET  /b HTTP/1.1\r\nHost: a\r\n\r\n",
        id="httptools-request-line-spacing",
    ),
    pytest.param(
        "palfrey.protocols.http11_httptools",
        'eol != len(method) + len(url) + 10 or head[eol - 8 : eol - 4] != b"HTTP"',
        "eol != len(method) + len(url) + 10",
        "httptools",
        b"GET / RTSP/1.0\r\nHost: a\r\n\r\n",
        id="httptools-protocol-name",
    ),
    pytest.param(
        "palfrey.protocols.http11_h11",
        "if not _h11_reads_it_raw(head):",
        "if False:",
        "h11",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
        id="h11-raw-head",
    ),
    pytest.param(
        "palfrey.protocols.http11_h11",
        "if not _h11_reads_it_raw(head):",
        "if False:",
        "h11",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        id="h11-obs-fold",
    ),
]


@pytest.mark.parametrize(("module", "old", "new", "backend", "stream"), _MUTANTS)
def test_the_harness_finds_a_skipped_check(
    module: str, old: str, new: str, backend: str, stream: bytes
) -> None:
    """Mutation check: the stream passes with the real classes; with the check skipped
    in `backend`'s module the harness reports the backends disagreeing."""
    honest = Driver()
    try:
        assert not check(honest, stream, [len(stream) // 2])
    finally:
        honest.close()
    changed = getattr(mutant(module, old, new), _CLASS[backend])
    broken = Driver(classes=classes(**{backend: changed}))
    try:
        problems = {finding.problem for finding in check(broken, stream, [len(stream) // 2])}
    finally:
        broken.close()
    assert "backends disagree" in problems


_CLASS = {"h11": "H11Connection", "httptools": "HTTPToolsConnection"}
