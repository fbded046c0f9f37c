"""Reading what a `palfrey` process reports: its JSON access lines and its /metrics
exposition (parsed by prometheus_client's own parser). Shared by the access-log, metrics
and HTTP/3 tests."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.helpers.process import PalfreyProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def access_records(proc: PalfreyProcess, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The first `count` JSON access lines the process wrote."""
    lines = proc.wait_for_lines(
        _is_access_record, count=count, timeout=timeout, what="access lines"
    )
    return [json.loads(line) for line in lines]


def _is_access_record(line: str) -> bool:
    return line.startswith("{") and json.loads(line).get("logger") == "palfrey.access"


def metrics_url(proc: PalfreyProcess) -> str:
    """The /metrics URL the process logged once its metrics listener was bound."""
    proc.wait_for_log("Metrics on http://")
    port = re.search(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics", proc.log)
    assert port is not None, proc.log
    return f"http://127.0.0.1:{port.group(1)}/metrics"


def parse(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        v
        for (found_name, found), v in samples.items()
        if found_name == name and set(labels.items()) <= found
    )
