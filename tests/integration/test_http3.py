"""HTTP/3 as a user runs it: `palfrey http3_app:app --http h3 --ssl-certfile ...` (and a
manifest) in a real process, aioquic's client (QuicConnectionProtocol + H3Connection)
over loopback UDP, httpx over TCP for Alt-Svc, real signals. Every server binds port 0;
the UDP port is read back from the server's own log line for the QUIC listener."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.helpers.h3client import H3Client, h3_connect
from tests.helpers.observe import access_records, metrics_url, parse, total
from tests.helpers.process import BIN, PalfreyProcess, clean_env
from tests.integration.http3_app import pattern

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent
_UDP = re.compile(r"serving HTTP/3 on quic://\[?[^\s\]]+?\]?:(\d+) \(UDP\)")
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(server certificate and key, CA bundle) from trustme."""
    where = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = where / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(server))
    bundle = where / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return server, bundle


def udp_port(proc: PalfreyProcess, timeout: float = 20.0) -> int:
    """The bound UDP port, from the log line the QUIC listener writes once bound."""
    proc.wait_for_log("serving HTTP/3 on quic://", timeout=timeout)
    match = _UDP.search(proc.log)
    assert match is not None, proc.log
    return int(match.group(1))


@contextlib.contextmanager
def h3_server(
    pki: tuple[Path, Path], *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[PalfreyProcess, int]]:
    """`palfrey http3_app:app --http h3 ...` on port 0; yields it and its UDP port once
    HTTP/3 is served."""
    args = [
        "http3_app:app",
        "--http",
        "h3",
        "--ssl-certfile",
        str(pki[0]),
        "--port",
        "0",
        "--timeout-graceful-shutdown",
        "5",
        *extra,
    ]
    with PalfreyProcess(args, cwd=HERE, env=env) as proc:
        port = udp_port(proc)
        yield proc, port


@contextlib.contextmanager
def supervisor_ready(tmp_path: Path) -> Iterator[tuple[dict[str, str], Any]]:
    """NOTIFY_SOCKET for a supervised server and a wait for its READY=1 (sd_notify(3)),
    sent once every first worker has reported ready: killing a worker before then is a
    failed start, which stops the server."""
    import socket

    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))

    def wait(timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if b"READY=1" in sock.recv(4096):
                    return
            except TimeoutError:
                break
        raise AssertionError("the supervisor did not report READY=1")

    try:
        yield {"NOTIFY_SOCKET": str(path)}, wait
    finally:
        sock.close()


async def _get(port: int, cafile: Path, path: str = "/") -> Any:
    async with h3_connect(port, str(cafile)) as client:
        return await client.request("GET", path)


def test_get_over_http3_and_alt_svc_over_tcp(pki: tuple[Path, Path]) -> None:
    with h3_server(pki) as (proc, port):
        response = asyncio.run(_get(port, pki[1], "/hello"))
        assert response.status == 200
        assert bytes(response.body).startswith(b"3 GET /hello ")
        assert response.header(b"server") == b"palfrey"
        assert response.header(b"alt-svc") is None  # already on HTTP/3
        # The TCP listener (port 0 too) answers over TLS and names the bound UDP port.
        tcp = proc.wait_for_port()
        assert tcp == port  # http3.port unset: the same number as the TCP port
        reply = httpx.get(f"https://127.0.0.1:{tcp}/", verify=str(pki[1]))
        assert reply.headers["alt-svc"] == f'h3=":{port}"; ma=86400'


def test_fifty_concurrent_streams_on_one_connection(pki: tuple[Path, Path]) -> None:
    async def main(port: int) -> list[Any]:
        async with h3_connect(port, str(pki[1])) as client:
            return list(
                await asyncio.gather(*(client.request("GET", f"/n/{i}") for i in range(50)))
            )

    with h3_server(pki, "--http3-max-concurrent-streams", "20") as (_, port):
        responses = asyncio.run(main(port))
    assert [r.status for r in responses] == [200] * 50
    for i, response in enumerate(responses):
        assert bytes(response.body).startswith(f"3 GET /n/{i} ".encode())


def test_large_download_and_upload_are_intact(pki: tuple[Path, Path]) -> None:
    upload = bytes(reversed(pattern(5 << 20)))

    async def main(port: int) -> tuple[Any, Any]:
        async with h3_connect(port, str(pki[1])) as client:
            down = await client.request("GET", "/download", timeout=30)
            up = await client.request("POST", "/digest", body=upload, timeout=60)
            return down, up

    # A stream window of 256 KiB: the 5 MiB upload needs credit returned many times.
    with h3_server(pki, "--http3-max-stream-data", "256KiB") as (_, port):
        down, up = asyncio.run(main(port))
    assert down.status == 200
    assert bytes(down.body) == pattern(1 << 20)
    assert bytes(up.body).decode() == f"{len(upload)} {hashlib.sha256(upload).hexdigest()}"


def test_a_reset_stream_reaches_the_app_as_disconnect(pki: tuple[Path, Path]) -> None:
    async def main(port: int) -> tuple[Any, Any]:
        async with h3_connect(port, str(pki[1])) as client:
            sid = client.start("GET", "/forever")
            streaming = client.responses[sid]
            await asyncio.wait_for(streaming.received.wait(), 10)
            client.cancel(sid, H3_REQUEST_CANCELLED)
            # The connection goes on serving other streams.
            return streaming, await client.request("GET", "/after")

    with h3_server(pki) as (proc, port):
        streaming, after = asyncio.run(main(port))
        proc.wait_for_log("forever ended with http.disconnect")
    assert streaming.status == 200
    assert after.status == 200


def test_trailers_early_hints_pathsend_and_scope(pki: tuple[Path, Path], tmp_path: Path) -> None:
    served = tmp_path / "served.bin"
    served.write_bytes(pattern(300_000))

    async def main(port: int) -> tuple[Any, Any]:
        async with h3_connect(port, str(pki[1])) as client:
            return (
                await client.request("GET", "/extensions"),
                await client.request("GET", "/file"),
            )

    with h3_server(pki, env={"H3_FILE": str(served)}) as (_, port):
        extensions, file = asyncio.run(main(port))
    assert extensions.interim == [[(b":status", b"103"), (b"link", b"</style.css>; rel=preload")]]
    assert extensions.trailers == [(b"x-checksum", b"abc")]
    info = json.loads(bytes(extensions.body))
    assert info["scheme"] == "https"
    assert info["http_version"] == "3"
    assert info["client"][0] == "127.0.0.1"
    assert info["server"] == ["127.0.0.1", port]
    assert info["tls_version"] == 0x0304
    assert info["has_cert"]
    assert info["host"] == "localhost"  # :authority presented as Host
    assert file.status == 200
    assert file.header(b"content-length") == b"300000"
    assert bytes(file.body) == served.read_bytes()


def test_a_malformed_request_is_a_stream_error(pki: tuple[Path, Path]) -> None:
    async def main(port: int) -> tuple[Any, Any, Any]:
        async with h3_connect(port, str(pki[1])) as client:
            # RFC 9114 §4.3.1: a request without :path is malformed.
            bad = _raw_request(
                client,
                [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")],
            )
            # §4.2: upper-case field names are malformed.
            upper = _raw_request(client, [*_pseudo(), (b"X-Upper", b"1")])
            for response in (bad, upper):
                await asyncio.wait_for(response.done.wait(), 10)
            return bad, upper, await client.request("GET", "/still-open")

    with h3_server(pki) as (_, port):
        bad, upper, good = asyncio.run(main(port))
    assert bad.reset == H3_MESSAGE_ERROR
    assert upper.reset == H3_MESSAGE_ERROR
    assert good.status == 200  # a stream error, not a connection error


def _pseudo() -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", b"/"),
    ]


def _raw_request(client: H3Client, fields: list[tuple[bytes, bytes]]) -> Any:
    from tests.helpers.h3client import H3Response

    sid = client._quic.get_next_available_stream_id()
    client.responses[sid] = response = H3Response()
    client.h3.send_headers(sid, fields, end_stream=True)
    client.transmit()
    return response


async def _fresh_connections(
    port: int, cafile: Path, count: int, batch: int = 10
) -> collections.Counter[object]:
    """`count` new connections, `batch` at a time, one GET each: outcome -> how many."""

    async def one(i: int) -> object:
        try:
            response = await _get(port, cafile, f"/c/{i}")
        except Exception as exc:
            return type(exc).__name__
        return response.status, bytes(response.body).split()[-1]  # (status, worker pid)

    outcomes: collections.Counter[object] = collections.Counter()
    for start in range(0, count, batch):
        results = await asyncio.gather(*(one(i) for i in range(start, min(count, start + batch))))
        outcomes.update(results)
    return outcomes


def test_two_workers_serve_two_hundred_fresh_connections(
    pki: tuple[Path, Path], tmp_path: Path
) -> None:
    with (
        supervisor_ready(tmp_path) as (env, ready),
        h3_server(pki, "--workers", "2", env=env) as (
            _,
            port,
        ),
    ):
        ready()  # both workers take new connections from here on
        outcomes = asyncio.run(_fresh_connections(port, pki[1], 200))
    statuses = collections.Counter(o[0] if isinstance(o, tuple) else o for o in outcomes.elements())
    assert statuses == {200: 200}, outcomes
    workers = {o[1] for o in outcomes if isinstance(o, tuple)}
    assert len(workers) == 2  # both workers took connections


def test_http3_through_a_sighup_rollover(pki: tuple[Path, Path], tmp_path: Path) -> None:
    async def main(proc: PalfreyProcess, port: int) -> collections.Counter[object]:
        loop = asyncio.get_running_loop()
        # The reload starts while connections are being made, and they go on until it
        # is complete (each old worker drained and replaced).
        loop.call_later(0.5, proc.signal, signal.SIGHUP)
        outcomes: collections.Counter[object] = collections.Counter()
        while proc.count("Reload complete") < 1:
            outcomes.update(await _fresh_connections(port, pki[1], 10))
            assert sum(outcomes.values()) < 2000, "the reload did not complete"
        outcomes.update(await _fresh_connections(port, pki[1], 10))
        return outcomes

    with (
        supervisor_ready(tmp_path) as (env, ready),
        h3_server(pki, "--workers", "2", env=env) as (
            proc,
            port,
        ),
    ):
        ready()
        outcomes = asyncio.run(main(proc, port))
        assert proc.count("Reload complete") == 1
    statuses = collections.Counter(o[0] if isinstance(o, tuple) else o for o in outcomes.elements())
    assert set(statuses) == {200}, outcomes
    assert len({o[1] for o in outcomes}) >= 3  # old and new workers served


def test_single_process_sighup_keeps_the_udp_socket(pki: tuple[Path, Path]) -> None:
    with h3_server(pki) as (proc, port):
        before = asyncio.run(_get(port, pki[1]))
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("serving HTTP/3 on quic://", count=2)
        after = asyncio.run(_get(port, pki[1]))
    assert (before.status, after.status) == (200, 200)
    # Same process (re-exec in place), same UDP port.
    assert bytes(before.body).split()[-1] == bytes(after.body).split()[-1]


def test_graceful_shutdown_finishes_requests_in_flight(pki: tuple[Path, Path]) -> None:
    async def main(proc: PalfreyProcess, port: int) -> Any:
        async with h3_connect(port, str(pki[1])) as client:
            sid = client.start("GET", "/slow")
            await asyncio.get_running_loop().run_in_executor(
                None, proc.wait_for_log, "slow request started"
            )
            proc.signal(signal.SIGTERM)
            response = client.responses[sid]
            await asyncio.wait_for(response.done.wait(), 10)
            await asyncio.wait_for(_terminated(client), 10)
            return response, client.terminated

    with h3_server(pki) as (proc, port):
        response, terminated = asyncio.run(main(proc, port))
        assert proc.wait(15) == 0
    assert response.status == 200
    assert terminated is not None
    assert terminated.error_code == 0x100  # H3_NO_ERROR


async def _terminated(client: H3Client) -> None:
    while client.terminated is None:
        await asyncio.sleep(0.02)


def test_from_a_manifest(pki: tuple[Path, Path], tmp_path: Path) -> None:
    manifest = tmp_path / "palfrey.toml"
    manifest.write_text(
        f"""
app = "http3_app:app"
app_dir = "{HERE}"
[server]
port = 0
[tls]
certfile = "{pki[0]}"
[http3]
enabled = true
alt_svc_max_age = 3600
"""
    )
    with PalfreyProcess(["--config", str(manifest)], cwd=tmp_path) as proc:
        port = udp_port(proc)
        response = asyncio.run(_get(port, pki[1]))
        reply = httpx.get(f"https://127.0.0.1:{proc.wait_for_port()}/", verify=str(pki[1]))
    assert response.status == 200
    assert reply.headers["alt-svc"] == f'h3=":{port}"; ma=3600'


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "palfrey"), "--check-config", *args],
        cwd=HERE,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_refuses_h3_without_tls_and_lists_the_udp_listener(
    pki: tuple[Path, Path],
) -> None:
    refused = _check("http3_app:app", "--http", "h3")
    assert refused.returncode == 2
    assert "HTTP/3 needs TLS" in refused.stderr + refused.stdout
    accepted = _check(
        "http3_app:app", "--http", "h3", "--ssl-certfile", str(pki[0]), "--port", "8443"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "listener: quic://127.0.0.1:8443 (UDP), ALPN h3" in accepted.stdout
    assert "HTTP/3" in accepted.stdout


def _curl_http3() -> str | None:
    curl = shutil.which("curl")
    if curl is None:
        return "curl is not installed"
    version = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
    if "HTTP3" not in version:
        return "the installed curl is built without HTTP/3 (no HTTP3 in curl --version)"
    return None


@pytest.mark.skipif(_curl_http3() is not None, reason=str(_curl_http3()))
def test_curl_http3(pki: tuple[Path, Path]) -> None:
    with h3_server(pki) as (_, port):
        result = subprocess.run(
            [
                "curl",
                "--http3-only",
                "--cacert",
                str(pki[1]),
                "-s",
                f"https://localhost:{port}/curl",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.stdout.startswith("3 GET /curl ")


def test_websocket_over_http3(pki: tuple[Path, Path]) -> None:
    """RFC 9220: an extended CONNECT carries the WebSocket in DATA frames."""
    from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

    async def main(port: int) -> tuple[Any, list[Any]]:
        async with h3_connect(port, str(pki[1])) as client:
            settings = client.h3.received_settings or {}
            assert settings.get(0x8) == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
            fields = [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", b"/ws"),
                (b"sec-websocket-version", b"13"),
            ]
            sid = _raw_stream(client, fields)
            response = client.responses[sid]
            await asyncio.wait_for(response.head.wait(), 10)
            frames = FrameProtocol(client=True, extensions=[])
            client.h3.send_data(sid, bytes(frames.send_data("hello", fin=True)), end_stream=False)
            client.transmit()
            got: list[Any] = []
            while not got:
                response.received.clear()
                frames.receive_bytes(bytes(response.body))
                response.body.clear()
                got = list(frames.received_frames())
                if not got:
                    await asyncio.wait_for(response.received.wait(), 10)
            client.h3.send_data(
                sid, bytes(frames.close(CloseReason.NORMAL_CLOSURE)), end_stream=True
            )
            client.transmit()
            return response, [(f.opcode, f.payload) for f in got if f.opcode is Opcode.TEXT]

    with h3_server(pki) as (_, port):
        response, messages = asyncio.run(main(port))
    assert response.status == 200
    assert messages == [(Opcode.TEXT, "echo:hello")]


def _raw_stream(client: H3Client, fields: list[tuple[bytes, bytes]]) -> int:
    from tests.helpers.h3client import H3Response

    sid = client._quic.get_next_available_stream_id()
    client.responses[sid] = H3Response()
    client.h3.send_headers(sid, fields, end_stream=False)
    client.transmit()
    return sid


def test_expect_100_continue_is_answered_when_the_app_reads(pki: tuple[Path, Path]) -> None:
    async def main(port: int) -> Any:
        async with h3_connect(port, str(pki[1])) as client:
            fields = [
                (b":method", b"POST"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", b"/digest"),
                (b"expect", b"100-continue"),
            ]
            sid = _raw_stream(client, fields)
            response = client.responses[sid]
            while not response.interim:  # the body is sent only after the 100
                await asyncio.sleep(0.01)
            client.h3.send_data(sid, b"abc", end_stream=True)
            client.transmit()
            await asyncio.wait_for(response.done.wait(), 10)
            return response

    with h3_server(pki) as (_, port):
        response = asyncio.run(asyncio.wait_for(main(port), 20))
    assert response.interim == [[(b":status", b"100")]]
    assert bytes(response.body).decode() == f"3 {hashlib.sha256(b'abc').hexdigest()}"


def test_garbage_and_unknown_versions_leave_the_listener_serving(pki: tuple[Path, Path]) -> None:
    import os
    import socket

    with h3_server(pki) as (_, port):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(5)
        try:
            # RFC 9000 §6: an unknown version in a long header gets Version Negotiation.
            dcid, scid = os.urandom(8), os.urandom(8)
            unknown = b"\xc0" + bytes.fromhex("1a2a3a4a") + b"\x08" + dcid + b"\x08" + scid
            probe.sendto(unknown.ljust(1200, b"\0"), ("127.0.0.1", port))
            answer, _ = probe.recvfrom(2048)
            assert answer[0] & 0x80
            assert answer[1:5] == b"\0\0\0\0"  # version 0: Version Negotiation
            assert answer[6:14] == scid  # addressed to the client's own ID
            assert b"\x00\x00\x00\x01" in answer[14:]  # offers QUIC v1
            for junk in (b"", b"\x00", os.urandom(40), b"\xc0" + os.urandom(1300)):
                probe.sendto(junk, ("127.0.0.1", port))
        finally:
            probe.close()
        response = asyncio.run(_get(port, pki[1], "/after-garbage"))
    assert response.status == 200


def test_an_upload_waits_for_an_app_that_does_not_read(pki: tuple[Path, Path]) -> None:
    body = pattern(1 << 20)

    async def main(port: int) -> tuple[int, Any]:
        async with h3_connect(port, str(pki[1])) as client:
            sid = client.start("POST", "/sleepy", body=body)
            await asyncio.sleep(1.0)  # the app sleeps 1.5 s before its first receive
            sent_while_asleep = client._quic._streams[sid].sender.highest_offset
            response = client.responses[sid]
            await asyncio.wait_for(response.done.wait(), 20)
            return sent_while_asleep, response

    with h3_server(pki, "--http3-max-stream-data", "64KiB") as (_, port):
        sent_while_asleep, response = asyncio.run(main(port))
    # Credit is returned as the app reads: asleep, it got one window (64 KiB of body and
    # the HEADERS/DATA frame headers), not the megabyte the client had ready.
    assert sent_while_asleep <= 64 * 1024 + 1024
    assert bytes(response.body).decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"


def test_http3_through_a_worker_crash_and_its_replacement(
    pki: tuple[Path, Path], tmp_path: Path
) -> None:
    import os

    with (
        supervisor_ready(tmp_path) as (env, ready),
        h3_server(pki, "--workers", "2", env=env) as (
            proc,
            port,
        ),
    ):
        ready()
        before = asyncio.run(_fresh_connections(port, pki[1], 20))
        pids = {int(o[1]) for o in before if isinstance(o, tuple)}
        assert len(pids) == 2
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        proc.wait_for_log("Replacing it in")
        # While one worker is gone, new connections go to the other one only.
        during = asyncio.run(_fresh_connections(port, pki[1], 20))
        proc.wait_for_log("Application startup complete", count=3, timeout=60)
        after = asyncio.run(_fresh_connections(port, pki[1], 40))
    for outcomes in (before, during, after):
        statuses = {o[0] if isinstance(o, tuple) else o for o in outcomes}
        assert statuses == {200}, outcomes
    assert victim not in {int(o[1]) for o in during}
    assert len({int(o[1]) for o in after}) == 2  # the replacement takes new connections


def test_a_dead_workers_connections_get_a_stateless_reset(
    pki: tuple[Path, Path], tmp_path: Path
) -> None:
    """RFC 9000 §10.3: the worker that takes a dead worker's slot answers that worker's
    connections with a Stateless Reset carrying the token the dead one advertised (the
    workers of a supervisor derive tokens from one key), so clients stop at once."""
    import os
    import socket

    async def main(proc: PalfreyProcess, port: int) -> tuple[bytes, bytes]:
        async with h3_connect(port, str(pki[1])) as client:
            response = await client.request("GET", "/whoami")
            pid = int(bytes(response.body).split()[-1])
            cid = client._quic._peer_cid.cid
            token = client._quic._peer_cid.stateless_reset_token
            os.kill(pid, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None, lambda: proc.wait_for_log("Application startup complete", count=3, timeout=60)
            )
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.settimeout(5)
            try:
                # A short-header packet of the dead worker's connection (its payload is
                # noise: nobody holds the keys any more).
                probe.sendto(b"\x41" + cid + os.urandom(60), ("127.0.0.1", port))
                answer, _ = probe.recvfrom(2048)
            finally:
                probe.close()
            return answer, token

    with (
        supervisor_ready(tmp_path) as (env, ready),
        h3_server(pki, "--workers", "2", env=env) as (
            proc,
            port,
        ),
    ):
        ready()
        answer, token = asyncio.run(main(proc, port))
    assert answer[0] & 0xC0 == 0x40  # looks like a short-header packet
    assert 21 <= len(answer) < 69  # smaller than what it answers (§10.3.3)
    assert answer[-16:] == token


async def _resume(port: int, cafile: Path) -> tuple[int, bool | None, int]:
    """Connect, collect session tickets, then reconnect with one and send a request as
    0-RTT: (tickets issued, whether the server accepted the early data, its status)."""
    from aioquic.asyncio.client import connect

    from tests.helpers.h3client import client_configuration

    tickets: list[Any] = []
    first = client_configuration(str(cafile))
    async with connect(
        "127.0.0.1",
        port,
        configuration=first,
        create_protocol=H3Client,
        session_ticket_handler=tickets.append,
    ) as client:
        await client.request("GET", "/first")
        await asyncio.sleep(0.2)  # NewSessionTicket follows the handshake
    if not tickets:
        return 0, None, 0
    again = client_configuration(str(cafile))
    again.session_ticket = tickets[-1]
    async with connect(
        "127.0.0.1", port, configuration=again, create_protocol=H3Client, wait_connected=False
    ) as client:
        sid = client.start("GET", "/early")  # in the client's first flight: 0-RTT
        response = client.responses[sid]
        await asyncio.wait_for(response.done.wait(), 10)
        handshake = client.handshake
        return (
            len(tickets),
            None if handshake is None else handshake.early_data_accepted,
            response.status,
        )


def test_zero_rtt_is_off_by_default_and_works_when_enabled(pki: tuple[Path, Path]) -> None:
    with h3_server(pki) as (_, port):
        tickets, accepted, _ = asyncio.run(_resume(port, pki[1]))
    assert (tickets, accepted) == (0, None)  # no session tickets: no resumption, no 0-RTT
    with h3_server(pki, "--http3-early-data") as (_, port):
        tickets, accepted, status = asyncio.run(_resume(port, pki[1]))
    assert tickets >= 1
    assert accepted is True
    assert status == 200


def test_address_validation_with_retry_and_two_workers(
    pki: tuple[Path, Path], tmp_path: Path
) -> None:
    """http3.retry: every new client proves its address with a Retry token first (RFC 9000
    §8.1.2); the Retry's connection ID carries the worker's slot, so the retried Initial
    returns to the worker that can check the token."""
    with (
        supervisor_ready(tmp_path) as (env, ready),
        h3_server(pki, "--http3-retry", "--workers", "2", env=env) as (_, port),
    ):
        ready()

        async def main() -> tuple[collections.Counter[object], bytes | None]:
            async with h3_connect(port, str(pki[1])) as client:
                token = client._quic._peer_token  # the token of the Retry it was sent
                await client.request("GET", "/")
            return await _fresh_connections(port, pki[1], 40), token

        outcomes, token = asyncio.run(main())
    assert token  # the handshake went through a Retry
    statuses = {o[0] if isinstance(o, tuple) else o for o in outcomes}
    assert statuses == {200}, outcomes
    assert len({o[1] for o in outcomes}) == 2


def test_alt_svc_on_http2_responses_too(pki: tuple[Path, Path]) -> None:
    import ssl

    with h3_server(pki, "--http2") as (proc, port):  # --http h3 and --http2: both
        context = ssl.create_default_context(cafile=str(pki[1]))
        with httpx.Client(http2=True, verify=context) as client:
            reply = client.get(f"https://127.0.0.1:{proc.wait_for_port()}/")
    assert reply.http_version == "HTTP/2"
    assert reply.headers["alt-svc"] == f'h3=":{port}"; ma=86400'


def test_access_log_and_metrics_count_http3_requests(pki: tuple[Path, Path]) -> None:
    """HTTP/3 requests reach the JSON access log and /metrics like HTTP/1.1 and HTTP/2's."""
    fields = (
        "%(method)s %(path)s %(protocol)s %(http_version)s %(scheme)s %(status)s "
        "%(body_bytes)s %(request_bytes)s %(duration_ms)s %(tls_version)s"
    )
    args = ["--logging-format", "json", "--access-log-format", fields]
    args += ["--metrics", "--metrics-listener", "127.0.0.1:0"]
    upload = pattern(70_000)

    async def main(port: int) -> list[Any]:
        async with h3_connect(port, str(pki[1])) as client:
            first = await client.request("GET", "/hello")
            second = await client.request("POST", "/digest", body=upload)
            return [first, second]

    with h3_server(pki, *args) as (proc, port):
        responses = asyncio.run(main(port))
        assert [r.status for r in responses] == [200, 200]
        hello, digest = access_records(proc, 2)
        samples = parse(httpx.get(metrics_url(proc), timeout=10).text)
    assert (hello["method"], hello["path"], hello["status"]) == ("GET", "/hello", 200)
    assert (hello["protocol"], hello["http_version"], hello["scheme"]) == ("HTTP/3", "3", "https")
    assert hello["tls_version"] == "TLSv1.3"
    assert (digest["request_bytes"], digest["body_bytes"]) == (len(upload), len(responses[1].body))
    assert 0 <= digest["duration_ms"] < 10_000
    assert total(samples, "palfrey_requests_total", protocol="HTTP/3") == 2
    assert total(samples, "palfrey_requests_total", protocol="HTTP/3", method="POST") == 1
    assert total(samples, "palfrey_request_body_bytes_total", protocol="HTTP/3") == len(upload)
    assert total(samples, "palfrey_request_duration_seconds_count", protocol="HTTP/3") == 2
