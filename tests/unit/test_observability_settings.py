"""The observability settings: validation, contradictions, the plan, the missing-backend
check, request ids and the metrics blocks."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from palfrey.asgi.proxy_headers import TrustedProxies
from palfrey.asgi.request_id import new_id, scope_hook
from palfrey.asgi.settings import RequestIdSettings
from palfrey.config import load_config
from palfrey.config.loader import ConfigError
from palfrey.metrics.block import HANDOFF_ENV, Block, adopt_handoff
from palfrey.metrics.exposition import Scrape, render
from palfrey.metrics.layout import Layout
from palfrey.metrics.recorder import Recorder
from palfrey.plan import check
from tests.helpers.plans import make_plan


def _problems(**sections: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(["main:app"], environ={}, **sections)
    return info.value.render()


def test_flags() -> None:
    config = load_config(
        [
            "main:app",
            "--access-log-format",
            "%(h)s %(r)s",
            "--access-log-atoms",
            "hypercorn",
            "--access-log-destination",
            "stderr",
            "--metrics",
            "--metrics-listener",
            "0.0.0.0:9100",
            "--metrics-buckets",
            "100ms",
            "--metrics-buckets",
            "1s",
        ],
        environ={},
    )
    assert config.logging.access_format == "%(h)s %(r)s"
    assert config.logging.access_atoms == "hypercorn"
    assert config.logging.access_destination == "stderr"
    assert config.metrics.enabled
    assert config.metrics.listener == "0.0.0.0:9100"
    assert config.metrics.buckets == (0.1, 1.0)


def test_bad_values_are_refused_with_their_key() -> None:
    assert "unknown access-log field %(nope)s" in _problems(logging={"access_format": "%(nope)s"})
    assert "increasing order" in _problems(metrics={"buckets": [1, 0.5]})
    assert '"host:port"' in _problems(metrics={"listener": "9090"})
    assert "not a header name" in _problems(request_id={"header": "x request id"})


def test_access_settings_with_a_logging_config_of_your_own_are_refused() -> None:
    text = _problems(logging={"dict_config": {"version": 1}, "access_format": "%(h)s"})
    assert "palfrey.logging.AccessFormatter" in text
    assert "logging.access_format" in text
    text = _problems(logging={"dict_config": {"version": 1}, "access_destination": "/tmp/x"})
    assert "palfrey.logging.AccessHandler" in text


def test_a_format_showing_request_ids_needs_them_on() -> None:
    text = _problems(logging={"access_format": "%(request_id)s"})
    assert "request_id.enabled" in text
    load_config(
        ["main:app"],
        environ={},
        logging={"access_format": "%(request_id)s"},
        request_id={"enabled": True},
    )


def test_the_plan() -> None:
    plan = make_plan(
        metrics={"enabled": True, "listener": "127.0.0.1:0", "buckets": [0.1, 1]},
        request_id={"enabled": True, "response_header": "X-Request-ID"},
        logging={"access_format": "%(h)s", "access_destination": "/var/log/access.log"},
    )
    assert plan.metrics is not None
    assert plan.metrics.buckets == (0.1, 1.0)
    assert plan.connections.request_id == RequestIdSettings(
        header=b"x-request-id", response_header=b"x-request-id", trusted=("127.0.0.1", "::1")
    )
    assert plan.logging.dict_config is not None
    access = plan.logging.dict_config["formatters"]["access"]
    assert access["access_format"] == "%(h)s"
    assert access["fmt"] == "%(message)s"
    handler = plan.logging.dict_config["handlers"]["access"]
    assert handler["destination"] == "/var/log/access.log"
    assert re.fullmatch(r"[0-9a-f]{16}", plan.config_hash)
    assert "metrics: http://127.0.0.1:0/metrics" in plan.describe()
    assert make_plan().metrics is None
    assert make_plan().connections.request_id is None


def test_the_config_hash_follows_the_effective_configuration() -> None:
    assert make_plan().config_hash == make_plan().config_hash
    assert make_plan(port=9000).config_hash != make_plan().config_hash


def test_metrics_without_prometheus_client_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(["main:app", "--metrics"], environ={})
    monkeypatch.setattr(check, "installed", lambda module: module != "prometheus_client")
    problems = [str(problem) for problem in check.missing_backends(config)]
    assert problems == [
        "'metrics.enabled': Prometheus metrics needs the 'prometheus_client' package: "
        "pip install 'palfrey[metrics]'"
    ]


# -- request ids ---------------------------------------------------------------------------------


def _scope(client: tuple[str, int], headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": client,
        "headers": headers,
        "extensions": {},
        "state": {},
        "scheme": "http",
        "path": "/",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
    }


def _hook(trusted: str = "127.0.0.1", *, record_peer: bool = False) -> Any:
    settings = RequestIdSettings(header=b"x-request-id", response_header=None, trusted=(trusted,))
    hook = scope_hook(
        TrustedProxies([trusted]), settings, TrustedProxies([trusted]), record_peer=record_peer
    )
    assert hook is not None
    return hook


@pytest.mark.parametrize(
    ("peer", "sent", "kept"),
    [
        ("127.0.0.1", b"abc-123", True),  # a trusted proxy's id is kept
        ("10.9.9.9", b"abc-123", False),  # anyone else's is replaced
        ("127.0.0.1", b"has space", False),  # not visible ASCII
        ("127.0.0.1", b"x" * 129, False),  # too long
    ],
)
def test_request_ids_from_trusted_peers_only(peer: str, sent: bytes, kept: bool) -> None:
    scope = _scope((peer, 1234), [(b"x-request-id", sent)])
    _hook()(scope)
    found = scope["state"]["request_id"]
    if kept:
        assert found == sent.decode()
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", found)


def test_the_peer_is_checked_before_proxy_headers_replace_the_client() -> None:
    scope = _scope(
        ("127.0.0.1", 1), [(b"x-forwarded-for", b"198.51.100.1"), (b"x-request-id", b"r1")]
    )
    _hook(record_peer=True)(scope)
    assert scope["client"] == ("198.51.100.1", 0)
    assert scope["state"]["request_id"] == "r1"
    assert scope["extensions"]["palfrey.peer"] == ("127.0.0.1", 1)


def test_new_ids_are_unique_and_random() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)


def test_no_hook_when_nothing_needs_one() -> None:
    assert scope_hook(None, None, None, record_peer=True) is None
    proxies = TrustedProxies(["127.0.0.1"])
    assert scope_hook(proxies, None, None, record_peer=False) == proxies.apply


# -- metrics blocks ------------------------------------------------------------------------------


class _Cycle:
    def __init__(self, method: str, version: str, status: int, duration: float) -> None:
        import time

        self.scope = {"method": method, "http_version": version}
        self.status = status
        self.start_time = time.monotonic() - duration
        self.body_received = 10
        self.bytes_sent = 20


def test_blocks_add_up_and_histograms_accumulate() -> None:
    layout = Layout((0.01, 0.1, 1.0))
    first, second, totals = Block(layout), Block(layout), Block(layout)
    try:
        Recorder(first).request(_Cycle("GET", "1.1", 200, 0.005))
        Recorder(first).request(_Cycle("POST", "2", 500, 0.5))
        Recorder(second).request(_Cycle("BREW", "1.1", 418, 5.0))
        totals.add_counters(second)
        body, content_type = render(Scrape(layout, [first], totals=totals, workers=1))
    finally:
        for block in (first, second, totals):
            block.close()
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert (
        'palfrey_requests_total{method="other",protocol="HTTP/1.1",status_class="4xx"} 1.0' in text
    )
    assert 'palfrey_requests_total{method="POST",protocol="HTTP/2",status_class="5xx"} 1.0' in text
    lines = [
        line for line in text.splitlines() if 'protocol="HTTP/1.1"' in line and "_bucket" in line
    ]
    counts = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert counts == [1.0, 1.0, 1.0, 2.0]  # 5 ms, then 5 s only in +Inf: cumulative
    assert 'palfrey_request_body_bytes_total{protocol="HTTP/1.1"} 20.0' in text
    assert "palfrey_workers 1.0" in text


def test_a_block_crosses_exec_when_its_layout_is_the_same() -> None:
    layout = Layout((0.5,))
    block = Block(layout)
    block.values[0] = 7.0
    environ = dict(block.handoff_env())
    adopted = adopt_handoff(environ, layout)
    assert adopted is not None
    assert adopted.values[0] == 7.0
    assert HANDOFF_ENV not in environ
    assert adopted.pid == os.getpid()
    adopted.close()
    other = Block(layout)
    environ = dict(other.handoff_env())
    assert adopt_handoff(environ, Layout((0.25, 0.5))) is None  # other buckets: start over
    block.close()
