"""systemd's readiness protocol (sd_notify(3)): READY=1, RELOADING=1, STOPPING=1.

Only when $NOTIFY_SOCKET is set (a `Type=notify` or `Type=notify-reload` unit); otherwise
every call is a no-op. Failures are logged at debug level and never stop the server.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["notify", "ready", "reloading", "status", "stopping"]

logger = logging.getLogger("palfrey.error")


def notify(message: str) -> bool:
    """Send `message` to $NOTIFY_SOCKET; True when it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        logger.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def ready(text: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={text}" if text else "") + f"\nMAINPID={os.getpid()}")


def reloading() -> bool:
    # systemd >= 253 (Type=notify-reload) wants the monotonic time with RELOADING=1.
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")
