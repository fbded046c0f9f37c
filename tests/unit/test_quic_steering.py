"""The reuseport BPF program that keeps a QUIC connection in one worker: its decisions
(run here by a small classic-BPF interpreter) and the kernel's (a real reuseport group on
loopback, datagrams with crafted connection IDs)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time

import pytest

from palfrey.plan.listeners import ListenerSpec
from palfrey.transports.quic_aioquic import Steering
from palfrey.workers.quic_steering import QuicGroup, program

MARKER = 0xA55A


def run(code: list[tuple[int, int, int, int]], packet: bytes) -> int:
    """Classic BPF, the subset the program uses (linux/filter.h semantics: a load past
    the packet's end returns 0)."""
    a = x = pc = 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x30:  # ldb [k]
            if k >= len(packet):
                return 0
            a = packet[k]
        elif op == 0x20:  # ld [k]
            if k + 4 > len(packet):
                return 0
            a = int.from_bytes(packet[k : k + 4], "big")
        elif op == 0x07:
            x = a
        elif op == 0x87:
            a = x
        elif op == 0xA4:
            a ^= k
        elif op == 0x94:
            a %= k
        elif op == 0x05:
            pc += k
        elif op in (0x15, 0x1D, 0x45):
            other = x if op == 0x1D else k
            hit = (a & other) != 0 if op == 0x45 else a == other
            pc += jt if hit else jf
        elif op == 0x06:
            return k
        elif op == 0x16:
            return a
        else:  # pragma: no cover - the program uses nothing else
            raise AssertionError(f"unknown opcode {op:#x}")


def short_header(dcid: bytes) -> bytes:
    return bytes([0x40]) + dcid + os.urandom(30)


def long_header(dcid: bytes, kind: int = 0) -> bytes:
    first = 0xC0 | kind << 4
    return (
        bytes([first]) + b"\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + b"\x08" + os.urandom(8)
    )


def test_our_connection_ids_go_to_their_slot_in_both_header_forms() -> None:
    code = program(MARKER, accepting=[0, 2])
    for slot in (0, 1, 5, 255):
        cid = Steering(slot, MARKER).new_cid()
        assert run(code, short_header(cid)) == slot
        assert run(code, long_header(cid, kind=0)) == slot  # Initial after the server's
        assert run(code, long_header(cid, kind=2)) == slot  # Handshake


def test_client_chosen_ids_go_to_an_accepting_slot_and_always_the_same_one() -> None:
    code = program(MARKER, accepting=[1, 4, 6])
    seen = set()
    for _ in range(300):
        dcid = os.urandom(8 + int.from_bytes(os.urandom(1), "big") % 13)
        if Steering(dcid[0], MARKER).new_cid()[:3] == dcid[:3]:
            continue  # passes for one of ours (once in 65536)
        first = run(code, long_header(dcid))
        assert first in (1, 4, 6)
        assert run(code, long_header(dcid)) == first  # a retransmitted Initial
        assert run(code, long_header(dcid, kind=1)) == first  # its 0-RTT packets
        seen.add(first)
    assert seen == {1, 4, 6}


def test_with_no_accepting_slot_the_kernel_chooses() -> None:
    assert run(program(MARKER, accepting=[]), long_header(os.urandom(8))) == 0xFFFFFFFF


def test_a_marker_from_another_run_is_not_ours() -> None:
    cid = Steering(3, MARKER ^ 0x0101).new_cid()
    assert run(program(MARKER, accepting=[7]), short_header(cid)) == 7


def test_the_program_fits_every_slot_count() -> None:
    code = program(MARKER, accepting=list(range(256)))
    assert len(code) < 4096  # BPF_MAXINSNS
    assert all(jt < 256 and jf < 256 for _, jt, jf, _ in code)
    assert run(code, short_header(Steering(200, MARKER).new_cid())) == 200


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_ATTACH_REUSEPORT_CBPF is Linux"
)
def test_the_kernel_steers_a_reuseport_group() -> None:
    group = QuicGroup(ListenerSpec(kind="udp", host="127.0.0.1", port=0), [], steered=True)
    from palfrey.plan.realize import bind_udp

    group.sockets.append(bind_udp(group.spec, 0, reuseport=True))
    group.ensure(3)
    try:
        group.steer(MARKER, accepting=[2])
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = ("127.0.0.1", group.port)
        sent = {}
        for slot in (0, 1, 2):
            for _ in range(5):
                cid = Steering(slot, MARKER).new_cid()
                client.sendto(short_header(cid), target)
                sent.setdefault(slot, set()).add(cid)
        initials = [long_header(os.urandom(8)) for _ in range(5)]
        for packet in initials:
            client.sendto(packet, target)
        client.close()
        received: dict[int, list[bytes]] = {}
        deadline = time.monotonic() + 5
        while sum(map(len, received.values())) < 20 and time.monotonic() < deadline:
            for slot, sock in enumerate(group.sockets):
                with contextlib.suppress(BlockingIOError):
                    received.setdefault(slot, []).append(sock.recv(2048))
        for slot in (0, 1):
            assert {p[1:9] for p in received.get(slot, [])} == sent[slot]
        assert {p[1:9] for p in received[2] if not p[0] & 0x80} == sent[2]
        assert sorted(p for p in received[2] if p[0] & 0x80) == sorted(initials)
    finally:
        group.close()
