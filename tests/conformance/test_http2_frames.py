"""Frame-level HTTP/2 conformance, organised by RFC 9113 section. Each test sends what a
broken or hostile client would and asserts the exact error code (and whether it is a
stream error, RST_STREAM, or a connection error, GOAWAY) that the RFC requires."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.helpers.h2peer import RawPeer, request_fields
from tests.helpers.server import RunningServer, run_server
from tests.integration.http2_app import app


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server(app, http2={"enabled": True, "max_concurrent_streams": 4}) as running:
        yield running


@pytest.fixture
def peer(server: RunningServer) -> Iterator[RawPeer]:
    client = RawPeer(server.address)
    yield client
    client.close()


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame with any type, flags and payload (RFC 9113 §4.1)."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


def assert_connection_error(peer: RawPeer, code: ErrorCodes) -> None:
    goaway = peer.goaway()
    assert ErrorCodes(goaway.error_code) == code
    assert peer.closed_after_goaway()


def assert_stream_error(peer: RawPeer, stream_id: int, code: ErrorCodes) -> None:
    reset = peer.reset(stream_id)
    assert ErrorCodes(reset.error_code) == code
    assert_alive(peer)


def assert_alive(peer: RawPeer) -> None:
    """The connection still works: a PING is answered (§6.7)."""
    ping = PingFrame(0)
    ping.opaque_data = b"stillok!"
    peer.send(ping)
    ack = peer.expect(PingFrame)
    assert "ACK" in ack.flags
    assert ack.opaque_data == b"stillok!"


# -- §3.4 connection preface ---------------------------------------------------------


def test_3_4_server_preface_is_settings(peer: RawPeer) -> None:
    first = peer.next_frame()
    assert isinstance(first, SettingsFrame)
    assert "ACK" not in first.flags


def test_3_4_first_frame_not_settings(server: RunningServer) -> None:
    peer = RawPeer(server.address, preface=False)
    peer.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    peer.send(PingFrame(0))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


# -- §4.1 / §5.5 frame format and extensions -----------------------------------------


def test_5_5_unknown_frame_type_is_ignored(peer: RawPeer) -> None:
    peer.send(raw_frame(0xEE, 0, 0, b"whatever"))
    peer.send(raw_frame(0xEE, 0, 1, b"on a stream"))
    assert_alive(peer)


def test_4_1_unknown_flags_are_ignored(peer: RawPeer) -> None:
    peer.send(raw_frame(0x6, 0xFE, 0, b"flagged!"))  # PING with undefined flags
    ack = peer.expect(PingFrame)
    assert "ACK" in ack.flags


# -- §4.2 frame size -------------------------------------------------------------------


def test_4_2_data_frame_over_max_frame_size(peer: RawPeer) -> None:
    peer.send(peer.headers(1, end_stream=False))
    peer.send(raw_frame(0x0, 0, 1, b"x" * 16385))
    assert_connection_error(peer, ErrorCodes.FRAME_SIZE_ERROR)


def test_4_2_headers_frame_over_max_frame_size(peer: RawPeer) -> None:
    peer.send(raw_frame(0x1, 0x5, 1, b"\x00" * 16385))
    assert_connection_error(peer, ErrorCodes.FRAME_SIZE_ERROR)


# -- §4.3 header compression ------------------------------------------------------------


def test_4_3_invalid_header_block(peer: RawPeer) -> None:
    peer.send(peer.headers(1, block=b"\xff\xff\xff\xff\xff\xff"))  # index far out of range
    assert_connection_error(peer, ErrorCodes.COMPRESSION_ERROR)


def test_4_3_dynamic_table_size_update_over_limit(peer: RawPeer) -> None:
    # A table size update larger than SETTINGS_HEADER_TABLE_SIZE (4096) (RFC 7541 §6.3).
    block = b"\x3f\xe1\x7f" + peer.encode(request_fields())  # size update to 16384
    peer.send(peer.headers(1, block=block))
    assert_connection_error(peer, ErrorCodes.COMPRESSION_ERROR)


# -- §5.1 stream states -------------------------------------------------------------


def test_5_1_data_on_idle_stream(peer: RawPeer) -> None:
    peer.send(DataFrame(1, data=b"x"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_5_1_headers_on_half_closed_remote_stream(peer: RawPeer) -> None:
    peer.send(peer.headers(1, request_fields(b"/sleep?0.3")))
    peer.send(peer.headers(1, [(b"x-trailer", b"late")]))
    assert_stream_error(peer, 1, ErrorCodes.STREAM_CLOSED)


def test_5_1_data_on_closed_stream(peer: RawPeer) -> None:
    peer.send(peer.headers(1))
    peer.expect(DataFrame, stream_id=1)
    peer.expect(PingFrame, timeout=0.3) if False else None
    # The response has ended the stream: DATA now is a STREAM_CLOSED error (§5.1).
    peer.send(DataFrame(1, data=b"late", flags=["END_STREAM"]))
    frame = peer.expect((RstStreamFrame, GoAwayFrame))
    assert ErrorCodes(frame.error_code) == ErrorCodes.STREAM_CLOSED


def test_5_1_1_even_stream_id_from_client(peer: RawPeer) -> None:
    peer.send(peer.headers(2))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_5_1_1_stream_id_lower_than_before(peer: RawPeer) -> None:
    peer.send(peer.headers(5))
    peer.send(peer.headers(3))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_5_1_2_over_concurrent_stream_limit_is_refused(peer: RawPeer) -> None:
    for sid in (1, 3, 5, 7):
        peer.send(peer.headers(sid, request_fields(b"/sleep?0.5")))
    peer.send(peer.headers(9))
    assert_stream_error(peer, 9, ErrorCodes.REFUSED_STREAM)


# -- §6.1 DATA, §6.2 HEADERS, §6.3 PRIORITY, §6.4 RST_STREAM ------------------------


def test_6_1_data_on_stream_zero(peer: RawPeer) -> None:
    peer.send(raw_frame(0x0, 0, 0, b"x"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_1_padding_longer_than_payload(peer: RawPeer) -> None:
    peer.send(peer.headers(1, end_stream=False))
    peer.send(raw_frame(0x0, 0x8, 1, b"\x09abc"))  # PADDED, pad length 9 > payload
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_2_headers_on_stream_zero(peer: RawPeer) -> None:
    peer.send(raw_frame(0x1, 0x5, 0, peer.encode(request_fields())))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_3_priority_with_wrong_length(peer: RawPeer) -> None:
    peer.send(raw_frame(0x2, 0, 1, b"\x00\x00\x00"))
    error = peer.expect((RstStreamFrame, GoAwayFrame))
    assert ErrorCodes(error.error_code) == ErrorCodes.FRAME_SIZE_ERROR


def test_6_3_priority_on_idle_stream_is_accepted(peer: RawPeer) -> None:
    frame = PriorityFrame(11)
    frame.depends_on, frame.stream_weight = 0, 15
    peer.send(frame)
    assert_alive(peer)


def test_6_4_rst_stream_on_stream_zero(peer: RawPeer) -> None:
    peer.send(raw_frame(0x3, 0, 0, b"\x00\x00\x00\x08"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_4_rst_stream_on_idle_stream(peer: RawPeer) -> None:
    peer.send(RstStreamFrame(1, error_code=8))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_4_rst_stream_with_wrong_length(peer: RawPeer) -> None:
    peer.send(peer.headers(1, end_stream=False))
    peer.send(raw_frame(0x3, 0, 1, b"\x00\x00\x08"))
    assert_connection_error(peer, ErrorCodes.FRAME_SIZE_ERROR)


# -- §6.5 SETTINGS -----------------------------------------------------------------------


def test_6_5_settings_are_acknowledged(peer: RawPeer) -> None:
    ack = peer.expect(SettingsFrame)
    while "ACK" not in ack.flags:
        ack = peer.expect(SettingsFrame)
    assert ack.settings == {}


def test_6_5_settings_ack_with_payload(peer: RawPeer) -> None:
    peer.send(raw_frame(0x4, 0x1, 0, b"\x00\x03\x00\x00\x00\x64"))
    assert_connection_error(peer, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_5_settings_on_a_stream(peer: RawPeer) -> None:
    peer.send(raw_frame(0x4, 0, 1, b"\x00\x03\x00\x00\x00\x64"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_5_settings_length_not_a_multiple_of_six(peer: RawPeer) -> None:
    peer.send(raw_frame(0x4, 0, 0, b"\x00\x03\x00\x00\x00"))
    assert_connection_error(peer, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_5_2_enable_push_not_boolean(peer: RawPeer) -> None:
    peer.send(raw_frame(0x4, 0, 0, b"\x00\x02\x00\x00\x00\x02"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_5_2_initial_window_size_too_large(peer: RawPeer) -> None:
    peer.send(raw_frame(0x4, 0, 0, b"\x00\x04\x80\x00\x00\x00"))
    assert_connection_error(peer, ErrorCodes.FLOW_CONTROL_ERROR)


def test_6_5_2_max_frame_size_too_small(peer: RawPeer) -> None:
    peer.send(raw_frame(0x4, 0, 0, b"\x00\x05\x00\x00\x3f\xff"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_5_2_unknown_setting_is_ignored(peer: RawPeer) -> None:
    peer.send(raw_frame(0x4, 0, 0, b"\x00\xff\x00\x00\x00\x01"))
    assert_alive(peer)


# -- §6.7 PING ---------------------------------------------------------------------------


def test_6_7_ping_is_answered_with_the_same_payload(peer: RawPeer) -> None:
    assert_alive(peer)


def test_6_7_ping_on_a_stream(peer: RawPeer) -> None:
    peer.send(raw_frame(0x6, 0, 1, b"12345678"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_7_ping_with_wrong_length(peer: RawPeer) -> None:
    peer.send(raw_frame(0x6, 0, 0, b"1234567"))
    assert_connection_error(peer, ErrorCodes.FRAME_SIZE_ERROR)


# -- §6.8 GOAWAY -------------------------------------------------------------------------


def test_6_8_goaway_on_a_stream(peer: RawPeer) -> None:
    peer.send(raw_frame(0x7, 0, 1, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_8_client_goaway_closes_the_connection(peer: RawPeer) -> None:
    peer.send(GoAwayFrame(0, last_stream_id=0, error_code=0))
    assert peer.closed_after_goaway()


# -- §6.9 WINDOW_UPDATE and flow control ------------------------------------------


def test_6_9_zero_increment_on_the_connection(peer: RawPeer) -> None:
    peer.send(raw_frame(0x8, 0, 0, b"\x00\x00\x00\x00"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_9_zero_increment_on_a_stream(peer: RawPeer) -> None:
    peer.send(peer.headers(1, request_fields(b"/sleep?0.3")))
    peer.send(raw_frame(0x8, 0, 1, b"\x00\x00\x00\x00"))
    assert_stream_error(peer, 1, ErrorCodes.PROTOCOL_ERROR)


def test_6_9_window_update_with_wrong_length(peer: RawPeer) -> None:
    peer.send(raw_frame(0x8, 0, 0, b"\x00\x00\x01"))
    assert_connection_error(peer, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_9_1_connection_window_overflow(peer: RawPeer) -> None:
    peer.send(WindowUpdateFrame(0, window_increment=2**31 - 1))
    assert_connection_error(peer, ErrorCodes.FLOW_CONTROL_ERROR)


def test_6_9_1_stream_window_overflow(peer: RawPeer) -> None:
    peer.send(peer.headers(1, request_fields(b"/sleep?0.3")))
    peer.send(WindowUpdateFrame(1, window_increment=2**31 - 1))
    assert_stream_error(peer, 1, ErrorCodes.FLOW_CONTROL_ERROR)


def test_6_9_1_data_beyond_the_stream_window(peer: RawPeer) -> None:
    peer.send(peer.headers(1, request_fields(b"/sleep?2", b"POST"), end_stream=False))
    for _ in range(5):
        peer.send(DataFrame(1, data=b"x" * 16384))  # 81920 > 65535
    error = peer.expect((RstStreamFrame, GoAwayFrame))
    assert ErrorCodes(error.error_code) == ErrorCodes.FLOW_CONTROL_ERROR


# -- §6.10 CONTINUATION -----------------------------------------------------------------


def test_6_10_other_frame_inside_a_header_block(peer: RawPeer) -> None:
    block = peer.encode(request_fields())
    peer.send(peer.headers(1, block=block[:5], end_headers=False))
    peer.send(PingFrame(0, opaque_data=b"12345678"))
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_10_continuation_without_headers(peer: RawPeer) -> None:
    frame = ContinuationFrame(1, data=peer.encode(request_fields()))
    frame.flags.add("END_HEADERS")
    peer.send(frame)
    assert_connection_error(peer, ErrorCodes.PROTOCOL_ERROR)


def test_6_10_split_header_block_is_served(peer: RawPeer) -> None:
    block = peer.encode(request_fields(b"/split"))
    peer.send(peer.headers(1, block=block[:3], end_headers=False))
    middle = ContinuationFrame(1, data=block[3:6])
    last = ContinuationFrame(1, data=block[6:])
    last.flags.add("END_HEADERS")
    peer.send(middle)
    peer.send(last)
    headers = peer.expect(HeadersFrame, stream_id=1)
    assert dict(peer.decoder.decode(headers.data))[":status"] == "200"


# -- §8.1.1 malformed messages: stream errors of type PROTOCOL_ERROR ---------------------


@pytest.mark.parametrize(
    "fields",
    [
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x")],  # no :path
        [*request_fields(), (b"Upper", b"x")],  # §8.2.1 upper-case name
        [*request_fields(), (b"connection", b"keep-alive")],  # §8.2.2
        [*request_fields(), (b"te", b"gzip")],  # §8.2.2
        [(b"x-first", b"1"), *request_fields()],  # §8.3 pseudo-header after a field
        [*request_fields(), (b":status", b"200")],  # §8.3.2 response pseudo-header
        [*request_fields(), (b":method", b"POST")],  # §8.3.1 duplicate
        [*request_fields(), (b"x-bad", b" leading")],  # §8.2.1 whitespace
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"")],  # §8.3.1 empty path
    ],
    ids=[
        "missing-path",
        "uppercase",
        "connection",
        "te",
        "pseudo-after",
        "status",
        "duplicate",
        "whitespace",
        "empty-path",
    ],
)
def test_8_1_1_malformed_request(peer: RawPeer, fields: list[tuple[bytes, bytes]]) -> None:
    peer.send(peer.headers(1, fields))
    assert_stream_error(peer, 1, ErrorCodes.PROTOCOL_ERROR)


def test_8_1_1_body_longer_than_content_length(peer: RawPeer) -> None:
    fields = [*request_fields(b"/echo", b"POST"), (b"content-length", b"3")]
    peer.send(peer.headers(1, fields, end_stream=False))
    peer.send(DataFrame(1, data=b"12345", flags=["END_STREAM"]))
    assert_stream_error(peer, 1, ErrorCodes.PROTOCOL_ERROR)


def test_8_1_1_body_shorter_than_content_length(peer: RawPeer) -> None:
    fields = [*request_fields(b"/echo", b"POST"), (b"content-length", b"10")]
    peer.send(peer.headers(1, fields, end_stream=False))
    peer.send(DataFrame(1, data=b"12345", flags=["END_STREAM"]))
    assert_stream_error(peer, 1, ErrorCodes.PROTOCOL_ERROR)


# -- §10.5 denial of service ---------------------------------------------------------


def test_10_5_continuation_flood(peer: RawPeer) -> None:
    block = peer.encode(request_fields())
    peer.send(peer.headers(1, block=block, end_headers=False))
    filler = ContinuationFrame(1, data=b"\x00" * 16000)
    for _ in range(10):
        peer.send(filler)
    assert_connection_error(peer, ErrorCodes.ENHANCE_YOUR_CALM)


def test_10_5_empty_continuation_flood(peer: RawPeer) -> None:
    block = peer.encode(request_fields())
    peer.send(peer.headers(1, block=block, end_headers=False))
    peer.send(ContinuationFrame(1, data=b"").serialize() * 100)
    assert_connection_error(peer, ErrorCodes.ENHANCE_YOUR_CALM)


def test_10_5_ping_flood(peer: RawPeer) -> None:
    peer.send(PingFrame(0, opaque_data=b"floodme!").serialize() * 1200)
    assert_connection_error(peer, ErrorCodes.ENHANCE_YOUR_CALM)


def test_10_5_settings_flood(peer: RawPeer) -> None:
    peer.send(SettingsFrame(0, settings={4: 65535}).serialize() * 1200)
    assert_connection_error(peer, ErrorCodes.ENHANCE_YOUR_CALM)


def test_10_5_1_header_list_over_the_limit(server: RunningServer) -> None:
    peer = RawPeer(server.address)
    fields = [*request_fields(), *[(b"x-h%d" % i, b"v" * 1000) for i in range(70)]]
    block = peer.encode(fields)
    peer.send(peer.headers(1, block=block[:16000], end_headers=False))
    rest = block[16000:]
    while rest:
        frame = ContinuationFrame(1, data=rest[:16000])
        rest = rest[16000:]
        if not rest:
            frame.flags.add("END_HEADERS")
        peer.send(frame)
    goaway = peer.goaway()
    assert ErrorCodes(goaway.error_code) == ErrorCodes.ENHANCE_YOUR_CALM
    peer.close()
