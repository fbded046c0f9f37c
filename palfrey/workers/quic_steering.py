"""Keeping every packet of a QUIC connection in the worker that holds it.

A TCP connection belongs to the process that accepted it; a QUIC connection is only a
stream of UDP datagrams, and the kernel hands each one to any socket bound to the port.
With several workers each on its own socket, a connection's packets would be spread over
processes that do not know it (hypercorn's "first packet must be INITIAL",
pgjones/hypercorn#114). The design (docs/explanation/http3.md says why this one):

- The supervisor binds one UDP socket per *worker slot*, all on the listener's address
  in one SO_REUSEPORT group, and keeps every one open for its whole run. The kernel
  numbers a group's sockets in the order they were bound and renumbers them only when
  one closes, so slot N is always the group's socket N.
- A worker serves its slot's socket and puts its slot number in the first byte of every
  connection ID it issues, with a check byte (slot XOR a per-run marker) beside it.
- A classic BPF program attached to the group (SO_ATTACH_REUSEPORT_CBPF) reads the
  destination connection ID of every datagram: one of ours goes to the socket of the
  slot it names; a client's first packets, which carry an ID the client chose at random,
  go to one of the slots that are accepting new connections, picked by that ID (so every
  retransmission of one client Initial picks the same worker).
- When a worker starts serving, its slot joins the accepting set; when it begins to
  stop, or dies, its slot leaves it, and the program is replaced (one setsockopt). A
  draining worker keeps receiving its own connections' packets until it exits; a
  replacement that takes the slot over later finds only stale packets there.

Nothing crosses a process per packet: the kernel does the routing.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

from palfrey.plan.listeners import ListenerSpec
from palfrey.plan.realize import bind_udp, close_listeners

__all__ = ["SO_ATTACH_REUSEPORT_CBPF", "QuicGroup", "program"]

SO_ATTACH_REUSEPORT_CBPF = 51
"""linux/asm-generic/socket.h; not exported by Python's socket module."""

MAX_SLOTS = 256
"""Slots fit the connection ID's first byte."""

# Classic BPF (linux/filter.h, bpf_common.h).
_LD_B_ABS = 0x30  # A = packet[k] (byte)
_LD_W_ABS = 0x20  # A = packet[k:k+4] (big-endian word)
_TAX = 0x07  # X = A
_TXA = 0x87  # A = X
_XOR_K = 0xA4  # A ^= k
_MOD_K = 0x94  # A %= k
_JA = 0x05  # pc += k
_JEQ_K = 0x15  # pc += (A == k) ? jt : jf
_JEQ_X = 0x1D  # pc += (A == X) ? jt : jf
_JSET_K = 0x45  # pc += (A & k) ? jt : jf
_RET_K = 0x06  # return k
_RET_A = 0x16  # return A

_NO_SOCKET = 0xFFFFFFFF
"""A return value past the group's sockets: the kernel falls back to its own hash."""

Instruction = tuple[int, int, int, int]


def program(marker: int, accepting: Sequence[int], cid_length: int = 8) -> list[Instruction]:
    """The steering program for a group (offsets are into the UDP payload, RFC 9000 §17).

    Short header: the destination connection ID starts at byte 1. Long header: its length
    is byte 5 and it starts at byte 6. An ID whose second and third bytes are its first
    XOR the two bytes of `marker` (and, in a long header, whose length is `cid_length`)
    is one of ours: return its first byte, the slot. Any other ID picks an accepting slot
    by its first four bytes (a client Initial's own ID is at least 8 bytes, RFC 9000
    §7.2, and stays the same in its retransmissions).
    """
    high, low = marker >> 8 & 0xFF, marker & 0xFF
    code: list[Instruction] = [
        (_LD_B_ABS, 0, 0, 0),  # 0: the first byte
        (_JSET_K, 8, 0, 0x80),  # 1: long header -> 10
        (_LD_B_ABS, 0, 0, 1),  # 2: short header: DCID[0], the slot
        (_TAX, 0, 0, 0),  # 3
        (_LD_B_ABS, 0, 0, 2),  # 4: DCID[1]
        (_XOR_K, 0, 0, high),  # 5
        (_JEQ_X, 0, 15, 0),  # 6: not ours -> 22
        (_LD_B_ABS, 0, 0, 3),  # 7: DCID[2]
        (_XOR_K, 0, 0, low),  # 8
        (_JEQ_X, 14, 12, 0),  # 9: ours -> 24, not ours -> 22
        (_LD_B_ABS, 0, 0, 5),  # 10: long header: DCID length
        (_JEQ_K, 0, 8, cid_length),  # 11: not our length -> 20
        (_LD_B_ABS, 0, 0, 6),  # 12: DCID[0], the slot
        (_TAX, 0, 0, 0),  # 13
        (_LD_B_ABS, 0, 0, 7),  # 14: DCID[1]
        (_XOR_K, 0, 0, high),  # 15
        (_JEQ_X, 0, 3, 0),  # 16: not ours -> 20
        (_LD_B_ABS, 0, 0, 8),  # 17: DCID[2]
        (_XOR_K, 0, 0, low),  # 18
        (_JEQ_X, 4, 0, 0),  # 19: ours -> 24
        (_LD_W_ABS, 0, 0, 6),  # 20: long header, not ours: hash DCID[0:4]
        (_JA, 0, 0, 4),  # 21: -> 26
        (_LD_W_ABS, 0, 0, 1),  # 22: short header, not ours: hash DCID[0:4]
        (_JA, 0, 0, 2),  # 23: -> 26
        (_TXA, 0, 0, 0),  # 24: ours: A = slot
        (_RET_A, 0, 0, 0),  # 25
    ]
    return code + _table(accepting)  # 26


def _table(accepting: Sequence[int]) -> list[Instruction]:
    """A = hash -> one of `accepting`: A %= n, then a jump table of returns."""
    slots = list(accepting)
    count = len(slots)
    if not count:
        return [(_RET_K, 0, 0, _NO_SOCKET)]
    code: list[Instruction] = [(_MOD_K, 0, 0, count)]
    code += [(_JEQ_K, count - 1, 0, index) for index in range(count)]
    code += [(_RET_K, 0, 0, slot) for slot in slots]
    return code


def attach(sock: socket.socket, code: list[Instruction]) -> None:
    """Attach (or replace) the group's program through one of its sockets."""
    filters = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
    fprog = struct.pack("HL", len(code), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


class QuicGroup:
    """The UDP sockets of one QUIC listener, one per worker slot (a single process has
    one, with no program)."""

    def __init__(self, spec: ListenerSpec, sockets: list[socket.socket], *, steered: bool):
        self.spec = spec
        self.sockets = sockets
        self.steered = steered

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def ensure(self, slots: int) -> None:
        """Bind sockets up to `slots` (they join the group in order: slot = index)."""
        if slots > MAX_SLOTS:
            raise ValueError(f"at most {MAX_SLOTS} workers serve HTTP/3 at once")
        while len(self.sockets) < slots:
            self.sockets.append(bind_udp(self.spec, self.port, reuseport=True))

    def steer(self, marker: int, accepting: Sequence[int]) -> None:
        if self.steered:
            attach(self.sockets[0], program(marker, accepting))

    def close(self) -> None:
        close_listeners(self.sockets)
