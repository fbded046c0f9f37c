"""What must hold for every request stream, whole or split, on both backends.

1. Each connection ends cleanly: no exception reaches the loop, nothing is written after
   the close, the output parses as responses, a refusal (4xx/5xx) is the last response
   and is followed by the close, and the connection is never left stalled (open, no app
   running, no timer that ends it).
2. Both backends give the same verdict: the same requests reach the app (method, path,
   query, version, headers, body), the same statuses, the same close.
3. Every split of the stream into two reads gives the verdict of the whole stream, and
   so does every split into three reads that is tried (some desyncs need a body split
   across reads and the next request in a third read).
4. What reaches the app is what h11 reads in the stream (`reference`), in order: never a
   request h11 does not see at that position, never other headers or another body.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tests.fuzz.driver import Driver, Outcome
from tests.fuzz.reference import normalise_headers, read

BACKENDS = ("h11", "httptools")


@dataclass(frozen=True)
class Finding:
    data: bytes
    backend: str
    cut: int | str | None  # split offset(s) ("a+b": three reads); None: whole
    problem: str
    detail: str

    def __str__(self) -> str:
        where = "whole" if self.cut is None else f"split at {self.cut}"
        return f"{self.problem} [{self.backend}, {where}] {self.detail}\n    data={self.data!r}"


def interesting_cuts(data: bytes) -> list[int]:
    """Split offsets next to every CR and LF and at the ends: where framing decisions
    are made."""
    cuts = {1, len(data) - 1}
    for index, byte in enumerate(data):
        if byte in (10, 13):
            cuts.update((index, index + 1, index + 2))
    return sorted(cut for cut in cuts if 0 < cut < len(data))


def choose_cuts(data: bytes, splits: int | None, rng: random.Random) -> list[int]:
    """Every offset (`splits` None), or the interesting ones plus `splits` at random."""
    if splits is None or len(data) <= splits + 2:
        return list(range(1, len(data)))
    cuts = set(interesting_cuts(data))
    if len(cuts) > 4 * splits:
        cuts = set(rng.sample(sorted(cuts), 4 * splits))
    cuts.update(rng.randrange(1, len(data)) for _ in range(splits))
    return sorted(cuts)


def choose_triples(data: bytes, count: int, rng: random.Random) -> list[tuple[int, int]]:
    """`count` random splits into three reads, preferring offsets next to CR/LF."""
    if len(data) < 3:
        return []
    near = interesting_cuts(data)
    triples = set()
    for _ in range(count):
        pool = near if near and rng.random() < 0.5 else range(1, len(data))
        first, second = sorted((rng.choice(pool), rng.randrange(1, len(data))))
        if first != second:
            triples.add((first, second))
    return sorted(triples)


def check(
    driver: Driver,
    data: bytes,
    cuts: Sequence[int],
    triples: Sequence[tuple[int, int]] = (),
) -> list[Finding]:
    """Run `data` whole, split at each of `cuts` and at each pair of `triples`, on both
    backends."""
    pieces = [[data[:cut], data[cut:]] for cut in cuts]
    pieces += [[data[:one], data[one:two], data[two:]] for one, two in triples]
    runs = [(backend, [data]) for backend in BACKENDS]
    runs += [(backend, split) for backend in BACKENDS for split in pieces]
    outcomes = driver.run_many(runs)
    whole = dict(zip(BACKENDS, outcomes, strict=False))
    findings: list[Finding] = []
    for backend, outcome in whole.items():
        findings += _sanity(data, backend, None, outcome)
    first, second = whole["h11"], whole["httptools"]
    if first.verdict() != second.verdict():
        findings.append(
            Finding(
                data,
                "both",
                None,
                "backends disagree",
                f"h11: {first.summary()} | httptools: {second.summary()}",
            )
        )
    findings += _against_reference(data, first)
    split_outcomes = iter(outcomes[len(BACKENDS) :])
    labels = [*cuts, *(f"{one}+{two}" for one, two in triples)]
    for backend in BACKENDS:
        expected = whole[backend].verdict()
        for cut in labels:
            outcome = next(split_outcomes)
            findings += _sanity(data, backend, cut, outcome)
            if outcome.verdict() != expected:
                findings.append(
                    Finding(
                        data,
                        backend,
                        cut,
                        "split changes the verdict",
                        f"whole: {whole[backend].summary()} | split: {outcome.summary()}",
                    )
                )
    return findings


def _sanity(
    data: bytes, backend: str, cut: int | str | None, outcome: Outcome
) -> Iterable[Finding]:
    def finding(problem: str) -> Finding:
        return Finding(data, backend, cut, problem, outcome.summary())

    if outcome.errors:
        yield finding("exception in the event loop")
    if outcome.late_writes:
        yield finding("bytes written after the close")
    if outcome.unsettled:
        yield finding("the loop never came to rest")
    if outcome.parse_error:
        yield finding("output is not a sequence of responses")
    if outcome.stalled:
        yield finding("connection left open with nothing to end it")
    statuses = outcome.statuses
    refusals = [index for index, status in enumerate(statuses) if status >= 400]
    if refusals and (refusals[0] != len(statuses) - 1 or not outcome.closed):
        yield finding("a refusal that is not the last response before the close")
    if sum(status == 200 for status in statuses) != len(outcome.complete):
        yield finding("a complete request without its response, or the reverse")


def _against_reference(data: bytes, outcome: Outcome) -> list[Finding]:
    expected, _ = read(data)
    served = [
        (s.method, s.raw_path, s.query, s.version, normalise_headers(s.headers), s.body)
        for s in outcome.complete
    ]
    wanted = [request.key() for request in expected]
    problems = []
    if served != wanted[: len(served)]:
        problems.append("the app got requests h11 does not read there")
    websockets = outcome.websockets
    if websockets:
        position = len(served)
        if position >= len(expected) or not expected[position].upgrade:
            problems.append("a WebSocket where h11 reads no upgrade request")
        elif websockets != [expected[position].raw_path]:
            problems.append("a WebSocket for another request")
    detail = (
        f"{outcome.summary()} | h11 reads {[(e.method, e.raw_path, len(e.body)) for e in expected]}"
    )
    return [Finding(data, "both", None, problem, detail) for problem in problems]
