"""Sans-IO WebSocket pieces: handshake checks, deflate negotiation, both engines, the
ASGI session's state machine and backpressure."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from typing import Any

import pytest

from palfrey.asgi.websocket_session import ClientDisconnected, WebSocketSession
from palfrey.protocols import websocket_frames
from palfrey.protocols.websocket_core import (
    Deflate,
    HandshakeError,
    accept_key,
    check_handshake,
    negotiate_deflate,
    wants_websocket,
)
from tests.helpers.plans import make_plan

HEADERS = [
    (b"host", b"x"),
    (b"upgrade", b"WebSocket"),
    (b"connection", b"keep-alive, Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-protocol", b"chat, superchat"),
]


def test_accept_key_rfc6455_example() -> None:
    # RFC 6455 §1.3.
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_handshake() -> None:
    assert wants_websocket(HEADERS)
    handshake = check_handshake("GET", "1.1", HEADERS)
    assert handshake.subprotocols == ["chat", "superchat"]
    assert handshake.accept == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _without(name: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in HEADERS if k != name]


@pytest.mark.parametrize(
    ("method", "version", "headers", "status"),
    [
        ("POST", "1.1", HEADERS, 405),
        ("GET", "1.0", HEADERS, 400),
        ("GET", "1.1", _without(b"sec-websocket-key"), 400),
        (
            "GET",
            "1.1",
            [*_without(b"sec-websocket-version"), (b"sec-websocket-version", b"8")],
            426,
        ),
        ("GET", "1.1", [*_without(b"sec-websocket-key"), (b"sec-websocket-key", b"YWJj")], 400),
        ("GET", "1.1", [*HEADERS, (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")], 400),
        ("GET", "1.1", _without(b"connection"), 400),
    ],
)
def test_invalid_handshakes(
    method: str, version: str, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    with pytest.raises(HandshakeError) as info:
        check_handshake(method, version, headers)
    assert info.value.status == status


def test_upgrade_without_connection_is_plain_http() -> None:
    assert not wants_websocket(_without(b"connection"))


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        (b"permessage-deflate", Deflate()),
        # The client supports limiting its window: Palfrey asks for 4 KiB (12 bits).
        (b"permessage-deflate; client_max_window_bits", Deflate(client_max_window_bits=12)),
        # Larger windows than Palfrey's are narrowed, smaller ones kept (RFC 7692 §7.1.2).
        (
            b"permessage-deflate; server_max_window_bits=15; client_max_window_bits=15",
            Deflate(server_max_window_bits=12, client_max_window_bits=12),
        ),
        (
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            Deflate(server_no_context_takeover=True, client_no_context_takeover=True),
        ),
        (
            b"permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            Deflate(server_max_window_bits=10, client_max_window_bits=9),
        ),
        # RFC 7692 §7.1: invalid offers are declined, the next acceptable one wins.
        (b"permessage-deflate; server_max_window_bits=8, permessage-deflate", Deflate()),
        (b"permessage-deflate; server_max_window_bits=16", None),
        (b"permessage-deflate; unknown=1", None),
        (b"permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        (b"x-webkit-deflate-frame", None),
    ],
)
def test_deflate_negotiation(offer: bytes, expected: Deflate | None) -> None:
    assert negotiate_deflate([offer]) == expected


def test_deflate_response_header() -> None:
    # A server may announce its window unasked (§7.1.2.1); the client's only if offered.
    assert Deflate().response() == b"permessage-deflate; server_max_window_bits=12"
    deflate = Deflate(True, True, 10, 12)
    assert deflate.response() == (
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        b"server_max_window_bits=10; client_max_window_bits=12"
    )


# -- engines -----------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Sink:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.written: list[bytes] = []
        self.events: list[tuple[str, int]] = []

    def message(self, data: str | bytes) -> None:
        self.messages.append(data)

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def pong(self) -> None:
        self.events.append(("pong", 0))

    def closed(self, code: int, reason: str) -> None:
        self.events.append(("closed", code))

    def failed(self, code: int, reason: str) -> None:
        self.events.append(("failed", code))


@pytest.fixture(params=["wsproto", "websockets-sansio"])
def make_engine(request: pytest.FixtureRequest) -> Any:
    settings = make_plan(websocket={"backend": request.param}).connections.websocket
    assert settings.backend == request.param
    assert settings.engine is not None

    def make(max_size: int = 1000, deflate: Deflate | None = None) -> tuple[Any, Sink]:
        sink = Sink()
        return settings.engine(sink, max_size=max_size, deflate=deflate), sink  # type: ignore[misc]

    return make


def feed_bytewise(engine: Any, data: bytes) -> None:
    for i in range(len(data)):
        engine.receive(data[i : i + 1])


def test_engine_messages_split_feed(make_engine: Any) -> None:
    engine, sink = make_engine()
    data = frame(1, "héllo".encode()) + frame(2, b"\x00\x01") + frame(9, b"p")
    data += frame(1, b"a", fin=False) + frame(0, b"b", fin=False) + frame(0, b"c")
    feed_bytewise(engine, data)
    assert sink.messages == ["héllo", b"\x00\x01", "abc"]
    assert sink.written[-1] == b"\x8a\x01p"  # the pong echoes the ping's data


def test_engine_many_fragments_up_to_max_size(make_engine: Any) -> None:
    engine, sink = make_engine(max_size=1000)
    data = frame(2, b"x", fin=False) + b"".join(frame(0, b"x", fin=False) for _ in range(998))
    engine.receive(data + frame(0, b"x"))
    assert sink.messages == [b"x" * 1000]
    engine.receive(frame(2, b"y" * 600, fin=False) + frame(0, b"y" * 401))
    assert sink.events == [("failed", 1009)]


def test_engine_declared_length_over_max_fails_early(make_engine: Any) -> None:
    engine, sink = make_engine(max_size=1000)
    engine.receive(frame(2, b"z" * 5000)[:100])
    assert sink.events == [("failed", 1009)]


def test_engine_invalid_utf8_fails_fast(make_engine: Any) -> None:
    engine, sink = make_engine()
    engine.receive(frame(1, b"ok\xc0\xaf", fin=False))
    assert sink.events == [("failed", 1007)]
    assert sink.written[-1][0] == 0x88
    assert sink.written[-1][2:4] == b"\x03\xef"  # close 1007


def test_engine_close_echo_and_server_close(make_engine: Any) -> None:
    engine, sink = make_engine()
    engine.receive(frame(8, struct.pack("!H", 4000) + b"bye"))
    assert sink.events == [("closed", 4000)]
    assert sink.written[-1][2:4] == struct.pack("!H", 4000)
    engine, sink = make_engine()
    closing = engine.close(1000, "done")
    assert closing[:4] == b"\x88\x06\x03\xe8"
    engine.receive(frame(8, struct.pack("!H", 1000)))
    assert sink.events == [("closed", 1000)]
    assert not sink.written  # no second close frame


def test_engine_deflate_round_trip(make_engine: Any) -> None:
    engine, sink = make_engine(max_size=1 << 20, deflate=Deflate(client_no_context_takeover=True))
    text = "compress me " * 500
    comp = zlib.compressobj(wbits=-15)
    payload = comp.compress(text.encode()) + comp.flush(zlib.Z_SYNC_FLUSH)
    engine.receive(frame(1, payload[:-4], rsv1=True))
    assert sink.messages == [text]
    out = engine.text(text)
    assert out[0] == 0xC1  # FIN + RSV1 + text
    decomp = zlib.decompressobj(wbits=-15)
    assert out[1] < 126  # 6000 bytes of text compress to a short frame
    assert decomp.decompress(out[2:] + b"\x00\x00\xff\xff").decode() == text


def test_engine_deflate_bomb_is_bounded(make_engine: Any) -> None:
    engine, sink = make_engine(max_size=10000, deflate=Deflate())
    comp = zlib.compressobj(wbits=-15)
    payload = comp.compress(b"\x00" * 5_000_000) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert len(payload) < 10000
    engine.receive(frame(2, payload[:-4], rsv1=True))
    assert sink.events == [("failed", 1009)]
    assert not sink.messages


# -- the ASGI session ----------------------------------------------------------------------


class Channel:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.write_paused = False

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        self.calls.append(("accept", subprotocol))

    def send_text(self, data: str) -> None:
        self.calls.append(("text", data))

    def send_bytes(self, data: bytes) -> None:
        self.calls.append(("bytes", data))

    def close(self, code: int, reason: str) -> None:
        self.calls.append(("close", code, reason))

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.calls.append(("respond", status, body))

    async def drain(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.calls.append(("pause",))

    def resume_reading(self) -> None:
        self.calls.append(("resume",))

    def app_finished(self) -> None:
        self.calls.append(("finished",))


def test_session_backpressure() -> None:
    async def main() -> None:
        channel = Channel()
        session = WebSocketSession({"type": "websocket"}, channel, max_queue=2)
        assert (await session.receive())["type"] == "websocket.connect"
        session.on_message("a")
        assert ("pause",) not in channel.calls
        session.on_message(b"b")
        assert channel.calls == [("pause",)]
        assert await session.receive() == {"type": "websocket.receive", "text": "a"}
        assert channel.calls == [("pause",), ("resume",)]
        assert await session.receive() == {"type": "websocket.receive", "bytes": b"b"}
        session.on_disconnect(1001, "away")
        assert await session.receive() == {
            "type": "websocket.disconnect",
            "code": 1001,
            "reason": "away",
        }

    asyncio.run(main())


def test_session_send_rules() -> None:
    async def main() -> None:
        channel = Channel()
        session = WebSocketSession({"type": "websocket"}, channel, max_queue=4)
        with pytest.raises(RuntimeError):
            await session.send({"type": "websocket.send", "text": "too early"})
        await session.send({"type": "websocket.accept", "subprotocol": "p"})
        await session.send({"type": "websocket.send", "text": "t"})
        await session.send({"type": "websocket.send", "bytes": b"b"})
        await session.send({"type": "websocket.close", "code": 1006})  # local-only: 1000
        with pytest.raises(ClientDisconnected):
            await session.send({"type": "websocket.send", "text": "late"})
        assert channel.calls == [
            ("accept", "p"),
            ("text", "t"),
            ("bytes", b"b"),
            ("close", 1000, ""),
        ]

    asyncio.run(main())


def test_session_app_return_paths() -> None:
    async def returns_early(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async def accepts_and_returns(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})

    async def main() -> None:
        channel = Channel()
        await WebSocketSession({}, channel, max_queue=1).run(returns_early)
        assert channel.calls == [("respond", 500, b"Internal Server Error"), ("finished",)]
        channel = Channel()
        await WebSocketSession({}, channel, max_queue=1).run(accepts_and_returns)
        assert channel.calls == [("accept", None), ("close", 1000, ""), ("finished",)]

    asyncio.run(main())


def test_engine_close_between_fragments_is_a_normal_close(make_engine: Any) -> None:
    # RFC 6455 §5.4 (Autobahn 7.1.5): the unfinished message is dropped.
    engine, sink = make_engine()
    close = frame(8, struct.pack("!H", 1000))
    engine.receive(frame(1, b"frag1", fin=False) + close + frame(0, b"frag2"))
    assert sink.events == [("closed", 1000)]
    assert sink.messages == []
    assert sink.written == [b"\x88\x02\x03\xe8"]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_engine_every_length_encoding_across_any_split(make_engine: Any, size: int) -> None:
    # RFC 6455 §5.2: 7-bit, 16-bit and 64-bit lengths, whole, in two pieces split at
    # every point of the header, and coalesced with the next frame.
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = frame(2, payload) + frame(1, b"next")
    for split in [*range(15), len(data) - 7]:
        engine, sink = make_engine(max_size=1 << 17)
        engine.receive(data[:split])
        engine.receive(data[split:])
        assert sink.messages == [payload, "next"], split
        assert not sink.events


def test_engine_control_frames_and_fragments_between_plain_frames(make_engine: Any) -> None:
    engine, sink = make_engine()
    data = (
        frame(1, b"one")
        + frame(9, b"ping")
        + frame(2, b"a", fin=False)
        + frame(10, b"unsolicited")
        + frame(0, b"b")
        + frame(1, b"two")
    )
    engine.receive(data)
    assert sink.messages == ["one", b"ab", "two"]
    assert sink.written == [b"\x8a\x04ping"]
    assert sink.events == [("pong", 0)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        # A client frame must be masked (RFC 6455 §5.1).
        (b"\x81\x03abc", 1002),
        # RSV1 without a negotiated extension (§5.2).
        (frame(1, b"abc", rsv1=True), 1002),
        # A new data frame while a fragmented message is open (§5.4).
        (frame(1, b"a", fin=False) + frame(1, b"b"), 1002),
        # Invalid UTF-8 in a whole text frame (§8.1).
        (frame(1, b"\xff"), 1007),
    ],
    ids=["unmasked", "rsv1", "data-inside-fragments", "invalid-utf8"],
)
def test_engine_protocol_errors_in_data_frames(make_engine: Any, data: bytes, code: int) -> None:
    engine, sink = make_engine()
    engine.receive(frame(1, b"fine") + data + frame(1, b"never"))
    assert sink.messages == ["fine"]
    assert sink.events == [("failed", code)]
    assert sink.written[-1][0] == 0x88
    assert sink.written[-1][2:4] == struct.pack("!H", code)


@pytest.mark.parametrize("size", [0, 1, 5, 2048, 2049, 70000])
def test_unmasking_without_the_c_extension(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    # `palfrey[standard]` installs wsproto only: unmasking then runs in pure Python.
    payload = os.urandom(size)
    key = os.urandom(4)
    expected = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    assert websocket_frames.apply_mask(payload, key) == expected
    monkeypatch.setattr(websocket_frames, "_c_apply_mask", None)
    assert websocket_frames.apply_mask(payload, key) == expected
    assert websocket_frames.apply_mask(memoryview(payload), key) == expected
