"""Request boundaries over loopback (issue 10): the reproducers of the conformance corpus
that concern where a request begins and ends, sent split into two writes at offsets where
framing decisions are made (next to each CR and LF, inside bodies, at head ends), on both
backends and both event loops. Each split must give the answer the whole payload gets.

The in-memory fuzz harness (tests/fuzz) splits at every offset; this proves the same with
real sockets and the real event loops' read patterns."""

from __future__ import annotations

import itertools

import pytest

from tests.conformance.conftest import BACKENDS, ServerPool
from tests.conformance.corpus import CASES, Accepted, Case
from tests.conformance.rawclient import exchange
from tests.conformance.test_http11_malformed import _check_accepted, _check_rejected, _context

_IDS = {
    "upgrade-not-taken-body-framed",
    "upgrade-not-taken-chunked-body-framed",
    "connection-xupgrade-is-not-upgrade",
    "chunked-trailers-never-headers",
    "large-body-then-pipelined-request",
    "h2c-upgrade-without-http2-then-bad-line",
    "pipelined-get-then-line-double-space",
    "pipelined-bodies-with-double-spaces",
    "chunked-with-http10-in-a-field-value",
    "bare-cr-before-request-line",
    "unknown-method-in-malformed-line",
    "absolute-form-unterminated-ipv6",
    "pipelined-valid-then-line-double-space",
    "te-chunked-ows-tabs-pipelined",
    "leading-empty-line",
}
_SPLIT_CASES = [case for case in CASES if case.id in _IDS]
_MAX_SPLITS = 6


def _splits(raw: bytes) -> list[int]:
    """Up to _MAX_SPLITS offsets: the middle of every segment between line ends (inside
    each line and each body), then offsets next to CR and LF, spread evenly."""
    ends = [index for index, byte in enumerate(raw) if byte in (10, 13)]
    middles = {(start + end) // 2 for start, end in zip([0, *ends], [*ends, len(raw)], strict=True)}
    near = {cut for index in ends for cut in (index, index + 1)}
    chosen = sorted(cut for cut in middles if 0 < cut < len(raw))
    rest = sorted(cut for cut in near - middles if 0 < cut < len(raw))
    step = max(len(rest) // max(_MAX_SPLITS - len(chosen), 1), 1)
    return sorted(set(chosen[:_MAX_SPLITS] + rest[::step]))[:_MAX_SPLITS]


def _three_reads(raw: bytes) -> list[tuple[int, int]]:
    """Splits into three writes: at the middles of each pair of neighbouring segments (a
    body cut in two, then the next request in its own read)."""
    ends = [index for index, byte in enumerate(raw) if byte in (10, 13)]
    middles = sorted({(a + b) // 2 for a, b in zip([0, *ends], [*ends, len(raw)], strict=True)})
    middles = [cut for cut in middles if 0 < cut < len(raw)]
    pairs = [(a, b) for a, b in itertools.pairwise(middles) if a < b]
    step = max(len(pairs) // _MAX_SPLITS, 1)
    return pairs[::step][:_MAX_SPLITS]


def test_the_boundary_cases_are_in_the_corpus() -> None:
    assert {case.id for case in _SPLIT_CASES} == _IDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("case", _SPLIT_CASES, ids=[case.id for case in _SPLIT_CASES])
def test_split_into_writes(case: Case, backend: str, server_pool: ServerPool) -> None:
    splits: list[int | tuple[int, ...]] = [
        *_splits(case.raw),
        *_three_reads(case.raw),
        *case.splits,
    ]
    for split in splits:
        server = server_pool.get(backend, case.config)
        result = exchange(
            server.address, case.raw, deadline=case.deadline, methods=case.methods, split=split
        )
        server.settle()
        where = f"split at {split}: {_context(case, server, result)}"
        if isinstance(case.expect, Accepted):
            _check_accepted(case.expect, result, server, where)
        else:
            assert isinstance(case.expect, int)
            try:
                _check_rejected(case, case.expect, result, server)
            except AssertionError as exc:
                raise AssertionError(f"split at {split}: {exc}") from None
