"""The peer address a client is told about (`welcome.your-address`).

Proxy headers are believed only from configured proxies; the reference believes anyone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PeerAddress:
    host: str
    port: int

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.host else "ipv4"

    def welcome_form(self) -> dict[str, str | int]:
        return {"port": self.port, self.family: self.host}


def _unmap(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _trusted(host: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def peer_address(
    socket_host: str, socket_port: int, headers: Sequence[tuple[bytes, bytes]],
    trusted_proxies: Sequence[Network],
) -> PeerAddress:
    """Socket peer, or what a trusted proxy says in X-Real-IP / X-Forwarded-For."""
    host = _unmap(socket_host)
    if not _trusted(host, trusted_proxies):
        return PeerAddress(host, socket_port)
    real_ip = _header(headers, b"x-real-ip")
    if real_ip:
        port_text = _header(headers, b"x-real-port")
        port = int(port_text) if port_text and port_text.isdigit() else socket_port
        try:
            return PeerAddress(_unmap(real_ip), port)
        except ValueError:
            return PeerAddress(host, socket_port)
    forwarded = _header(headers, b"x-forwarded-for")
    if forwarded:
        # The right-most entry not added by a trusted proxy is the client.
        for entry in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
            candidate = _unmap(entry)
            if not _trusted(candidate, trusted_proxies):
                return PeerAddress(candidate, socket_port)
    return PeerAddress(host, socket_port)
