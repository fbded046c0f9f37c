"""QUIC listeners in the process model: bound beside their TCP sibling's port, kept across
a reload and a re-exec, grown one socket per worker slot; and the supervisor reading a
dying worker's last Ready."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
from pathlib import Path

import trustme

from palfrey.workers.messages import Ready
from palfrey.workers.sockets import ListenerSet, adopt_handoff, handoff_env, reusable_quic
from tests.helpers.plans import make_plan


def _h3_plan(tmp_path: Path, *extra: str) -> object:
    cert = tmp_path / "server.pem"
    trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(cert))
    return make_plan(["main:app", "--http", "h3", "--ssl-certfile", str(cert), *extra])


def test_the_udp_socket_takes_the_tcp_port_and_survives_a_handoff(tmp_path: Path) -> None:
    plan = _h3_plan(tmp_path, "--host", "127.0.0.1", "--port", "0")
    listeners, fresh = ListenerSet.open(plan)  # type: ignore[arg-type]
    try:
        (tcp,) = listeners.sockets
        (udp,) = listeners.quic_sockets()
        assert udp.type == socket.SOCK_DGRAM
        assert udp.getsockname()[1] == tcp.getsockname()[1]
        assert len(fresh) == 2
        # Across a re-exec the UDP socket is inherited like the TCP one.
        environ = dict(handoff_env(listeners))
        adopted = adopt_handoff(environ)
        try:
            again, bound = ListenerSet.open(plan, reuse=adopted)  # type: ignore[arg-type]
            assert bound == []
            (kept,) = again.quic_sockets()
            assert kept.type == socket.SOCK_DGRAM
            assert kept.getsockname() == udp.getsockname()
        finally:
            # In one process the adopted sockets share the originals' descriptors:
            # detached here, closed once below.
            for sock in adopted.values():
                sock.detach()
    finally:
        listeners.close_except()


def test_a_steered_group_grows_one_socket_per_slot_and_is_reused(tmp_path: Path) -> None:
    plan = _h3_plan(tmp_path, "--host", "127.0.0.1", "--port", "0")
    listeners, _ = ListenerSet.open(plan, steered=True)  # type: ignore[arg-type]
    try:
        (group,) = listeners.quic.values()
        group.ensure(3)
        ports = {sock.getsockname() for sock in group.sockets}
        assert len(group.sockets) == 3
        assert len(ports) == 1  # one address, three sockets of one reuseport group
        group.steer(0x1234, [0, 2])
        again, bound = ListenerSet.open(  # a reload with the same listeners
            plan,  # type: ignore[arg-type]
            reuse={str(s): k for s, k in listeners.by_spec.items()},
            reuse_quic=reusable_quic(listeners),
            steered=True,
        )
        assert bound == []
        assert again.quic_sockets(2) is not None
        assert again.quic_sockets(2)[0] is group.sockets[2]
    finally:
        listeners.close_except()


def test_a_ready_sent_just_before_dying_is_read() -> None:
    from palfrey.workers.supervisor import Supervisor, WorkerHandle

    async def main() -> str:
        parent, child = multiprocessing.Pipe(duplex=True)
        child.send(Ready(os.getpid()))
        child.close()  # the worker is gone; its Ready is still in the pipe
        worker = WorkerHandle(
            number=1,
            process=None,
            conn=parent,
            plan=None,
            generation=0,
            trial=True,  # type: ignore[arg-type]
        )
        Supervisor._read_last_words(None, worker)  # type: ignore[arg-type]
        return worker.state

    assert asyncio.run(main()) == "ready"
