"""plan(config): every decision about how a Config will run, with no side effects.

The plan names the listeners to bind, the protocol stack of each connection (HTTP/1.1
parser, HTTP/2 and HTTP/3, WebSocket backend, ALPN list), the event loop and the process
topology. It reads nothing but the Config, the environment mapping it is handed (for
systemd socket activation) and which optional packages are installed, so it can be
printed by `--check-config` and tested without binding anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from palfrey.build import registry
from palfrey.build.listeners import ListenerSpec, listener_specs
from palfrey.config.runtime import RuntimeConfig


@dataclass(frozen=True)
class Plan:
    listeners: tuple[ListenerSpec, ...]
    tls: bool
    alpn: tuple[str, ...]
    http1: str
    http2: bool
    http3: bool
    websocket: str
    loop: str
    workers: int
    reload: bool

    def summary(self) -> str:
        """One line for logs and --check-config."""
        scheme = "https" if self.tls else "http"
        where = ", ".join(
            f"{scheme}://{spec}" if spec.kind == "tcp" else str(spec) for spec in self.listeners
        )
        versions = ["HTTP/1.1"] + ["HTTP/2"] * self.http2 + ["HTTP/3"] * self.http3
        processes = "reload" if self.reload else f"{self.workers} worker(s)"
        return (
            f"{where} | {' + '.join(versions)} (http1={self.http1}, ws={self.websocket}) | "
            f"loop={self.loop} | {processes}"
        )


def plan(config: RuntimeConfig, environ: Mapping[str, str] | None = None) -> Plan:
    env = os.environ if environ is None else environ
    alpn = ("h2", "http/1.1") if config.http2.enabled else ("http/1.1",)
    return Plan(
        listeners=tuple(listener_specs(config.server, env)),
        tls=config.tls.enabled,
        alpn=alpn,
        http1=registry.http1_backend(config),
        http2=config.http2.enabled,
        http3=config.http3.enabled,
        websocket=registry.websocket_backend(config),
        loop=registry.loop_name(config),
        workers=config.workers.count,
        reload=config.reload.enabled,
    )
