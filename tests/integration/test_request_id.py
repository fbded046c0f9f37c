"""Request ids over loopback with httpx: taken from a trusted proxy's header, ignored from
an untrusted peer, in the scope, echoed in a response header."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.helpers.server import make_config, run_server
from tests.integration.observability_app import app

pytestmark = pytest.mark.timeout(60)

HEX_ID = re.compile(r"[0-9a-f]{32}")


def _serve(trusted: list[str]) -> run_server:  # type: ignore[valid-type]
    config = make_config(
        "httptools",
        request_id={"enabled": True, "response_header": "x-request-id"},
        proxy={"forwarded_allow_ips": trusted},
    )
    return run_server(app, config=config)


def test_an_id_from_a_trusted_proxy_is_kept() -> None:
    with _serve(["127.0.0.1"]) as running:
        response = httpx.get(running.url + "/id", headers={"X-Request-ID": "lb-7f3a"})
    assert response.text == "lb-7f3a"  # what the app found in scope["state"]
    assert response.headers["x-request-id"] == "lb-7f3a"


def test_an_id_from_an_untrusted_peer_is_replaced() -> None:
    with _serve(["10.1.2.3"]) as running:
        chosen = httpx.get(running.url + "/id", headers={"X-Request-ID": "chosen-by-client"})
        fresh = httpx.get(running.url + "/id")
    assert chosen.text != "chosen-by-client"
    assert HEX_ID.fullmatch(chosen.text)
    assert chosen.headers["x-request-id"] == chosen.text
    assert HEX_ID.fullmatch(fresh.text)
    assert fresh.text != chosen.text


def test_an_unusable_id_from_a_trusted_proxy_is_replaced() -> None:
    with _serve(["127.0.0.1"]) as running:
        response = httpx.get(running.url + "/id", headers={"X-Request-ID": "x" * 200})
    assert HEX_ID.fullmatch(response.text)


def test_websocket_handshakes_get_ids_too() -> None:
    from websockets.sync.client import connect

    with _serve(["127.0.0.1"]) as running:
        host, port = running.address
        with connect(f"ws://{host}:{port}/ws", additional_headers={"X-Request-ID": "ws-1"}) as ws:
            assert ws.response is not None
            assert ws.response.headers["x-request-id"] == "ws-1"
