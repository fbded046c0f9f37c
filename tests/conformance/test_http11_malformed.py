"""The malformed-request corpus (corpus.py) against both HTTP/1.1 backends, black-box over
loopback with a raw socket: SPEC §3 "malformed or ambiguous requests get a 4xx and the
connection is closed: never a smuggled second request, never a 500"."""

from __future__ import annotations

import pytest

from tests.conformance.conftest import BACKENDS, ConformanceServer, ServerPool
from tests.conformance.corpus import CASES, SMUGGLED_PATH, Accepted, Case, SilentClose
from tests.conformance.rawclient import Exchange, exchange


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_corpus(case: Case, backend: str, server_pool: ServerPool) -> None:
    server = server_pool.get(backend, case.config)
    result = exchange(
        server.address,
        case.raw,
        deadline=case.deadline,
        dribble=case.dribble,
        methods=case.methods,
    )
    server.settle()  # a request dispatched before the close has reached the app
    context = _context(case, server, result)
    if isinstance(case.expect, Accepted):
        _check_accepted(case.expect, result, server, context)
    elif isinstance(case.expect, SilentClose):
        assert result.raw == b"", f"expected a silent close, got bytes: {context}"
        assert result.eof, f"connection not closed: {context}"
    else:
        _check_rejected(case, case.expect, result, server)
    if case.within is not None:
        assert result.eof, f"connection not closed: {context}"
        earliest, latest = case.within
        assert earliest <= result.elapsed <= latest, (
            f"closed after {result.elapsed:.2f}s, expected {earliest:.2f}-{latest:.2f}s: {context}"
        )


def _context(case: Case, server: ConformanceServer, result: Exchange) -> str:
    return f"[{case.id} | {server.backend} | {case.rfc}] {result.summary()}"


def _check_rejected(case: Case, status: int, result: Exchange, server: ConformanceServer) -> None:
    served = server.recorder.paths()
    got = [response.status for response in result.responses]
    smuggled = "SMUGGLED REQUEST SERVED; " if SMUGGLED_PATH in served else ""
    where = f"{smuggled}app served {served}: {_context(case, server, result)}"
    first = case.answered_first
    wanted = [200] * len(first) + [status]
    assert got[: len(wanted)] == wanted, f"expected {wanted}, got {got}: {where}"
    assert not smuggled, where
    assert len(got) == len(wanted), f"more responses than {wanted}: {got}: {where}"
    assert not result.trailing, f"bytes after the {status} response: {where}"
    assert result.eof, f"connection not closed after {status}: {where}"
    error = result.responses[-1]
    assert error.closes(), f"no 'Connection: close' on the {status}: {where}"
    assert not error.informational, f"1xx {error.informational} before the {status}: {where}"
    for echo, response in zip(first, result.responses, strict=False):
        assert response.body == echo.expected_body(), f"wrong body {response.body!r}: {where}"
    assert served[: len(first)] == tuple(echo.path for echo in first), where


def _check_accepted(
    expect: Accepted, result: Exchange, server: ConformanceServer, context: str
) -> None:
    got = [response.status for response in result.responses]
    wanted = [200] * len(expect.responses)
    assert got == wanted, f"expected statuses {wanted}, got {got}: {context}"
    assert not result.trailing, f"stray bytes after the responses: {context}"
    for echo, response in zip(expect.responses, result.responses, strict=True):
        assert response.body == echo.expected_body(), (
            f"expected body {echo.expected_body()[:200]!r}, got {response.body[:200]!r}: {context}"
        )
    served = server.recorder.snapshot()
    assert [(s.method, s.path) for s in served] == [
        (echo.method, echo.path) for echo in expect.responses
    ], f"app served {served}: {context}"
    for echo, seen in zip(expect.responses, served, strict=True):
        if echo.headers is not None:
            assert seen.headers == echo.headers, f"app got headers {seen.headers}: {context}"
    assert result.eof, f"connection not closed after 'Connection: close': {context}"
