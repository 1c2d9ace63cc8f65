"""Listening: the address to bind and uvicorn, with TLS when a certificate
and key are given."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from types import FrameType

import uvicorn
from fastapi import FastAPI

from strongroom.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:8420"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """`ADDRESS:PORT`, an IPv6 address in brackets (`[::1]:8420`)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise UsageError(f"--listen {text[:80]!r}: give ADDRESS:PORT (e.g. 127.0.0.1:8420)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise UsageError(f"--listen {text[:80]!r}: {host!r} is not an IP address") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise UsageError(f"--listen {text[:80]!r}: port must be 1-65535")
    return Listen(host, port)


def run(
    app: FastAPI, listen: Listen, *, tls_cert: str | None = None, tls_key: str | None = None
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM: uvicorn finishes the
    requests in flight, then returns)."""
    config = uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    _Server(config).run()


class _Server(uvicorn.Server):
    """SIGINT/SIGTERM are how this server is stopped: after the graceful
    shutdown it returns (exit 0) instead of raising the signal again, as
    uvicorn does for embedders."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()
