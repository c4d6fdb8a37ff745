"""The peer address a client is told about (`welcome.your-address`) and is limited by.

Proxy headers are believed only from configured proxies (the reference believes anyone), and
only when they hold what they should: `X-Real-IP` one IP address, `X-Real-Port` one port in
1-65535, `X-Forwarded-For` addresses. Anything else is ignored and the socket peer is used, so a
broken proxy cannot hand the client, or the per-address limits, a made-up address.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PeerAddress:
    host: str
    port: int

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.host else "ipv4"

    def welcome_form(self) -> dict[str, str | int]:
        return {"port": self.port, self.family: self.host}


@functools.lru_cache(maxsize=4096)  # every connection asks two or three times, most of them
def parse_ip(text: str) -> IPAddress | None:  # for an address seen before
    """One IP address, an IPv4-mapped IPv6 one as IPv4; None for anything else (lists, names,
    ports, brackets, IPv6 zone ids, which name an interface of the sender, not a host)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def parse_port(text: str) -> int | None:
    """A TCP port, 1-65535, in ASCII digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def _values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1").strip() for key, value in headers if key.lower() == name]


def _single(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """A header that must appear once; repeated, it is as unbelievable as a garbled one."""
    values = _values(headers, name)
    return values[0] if len(values) == 1 else None


def _trusted(ip: IPAddress | None, proxies: Sequence[Network]) -> bool:
    return ip is not None and any(ip in net for net in proxies)


def is_trusted_proxy(socket_host: str, proxies: Sequence[Network]) -> bool:
    """Whether the client's address comes from this peer's headers rather than the socket:
    per-address limits can then only be applied once the request head is read."""
    return _trusted(parse_ip(socket_host), proxies)


def _forwarded_for(
    headers: Sequence[tuple[bytes, bytes]], proxies: Sequence[Network]
) -> IPAddress | None:
    """The right-most entry not added by a trusted proxy is the client; entries to its left
    come from the client itself, so a garbled one there ends the search (None)."""
    entries = [part.strip() for value in _values(headers, b"x-forwarded-for")
               for part in value.split(",")]
    for entry in reversed(entries):
        ip = parse_ip(entry)
        if ip is None:
            return None
        if not _trusted(ip, proxies):
            return ip
    return None


def peer_address(
    socket_host: str, socket_port: int, headers: Sequence[tuple[bytes, bytes]],
    trusted_proxies: Sequence[Network],
) -> PeerAddress:
    """Socket peer, or what a trusted proxy says in X-Real-IP (+ X-Real-Port) or
    X-Forwarded-For; a port the proxy does not give validly is the socket's."""
    socket_ip = parse_ip(socket_host)
    host = str(socket_ip) if socket_ip is not None else socket_host
    if not _trusted(socket_ip, trusted_proxies):
        return PeerAddress(host, socket_port)
    real_ip_text = _single(headers, b"x-real-ip")
    real_ip = parse_ip(real_ip_text) if real_ip_text is not None else None
    if real_ip is not None:
        port_text = _single(headers, b"x-real-port")
        port = parse_port(port_text) if port_text is not None else None
        return PeerAddress(str(real_ip), port if port is not None else socket_port)
    forwarded = _forwarded_for(headers, trusted_proxies)
    if forwarded is not None:
        return PeerAddress(str(forwarded), socket_port)
    return PeerAddress(host, socket_port)
