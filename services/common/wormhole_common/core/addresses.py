"""What a per-address limit counts a client by, in both services.

A client reaching a dual-stack socket over IPv4 is seen as an IPv4-mapped IPv6 address
(::ffff:a.b.c.d): it is counted as that IPv4 address, the same client as over an IPv4 socket.
An IPv6 client is counted by its /64: one subscriber gets at least a /64, so a limit on single
IPv6 addresses would limit nothing.
"""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)  # every connection asks, most of them for an address seen
def address_key(host: str) -> str:  # before
    """The IPv4 address (also of an IPv4-mapped one), or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an address (a test's fake peer): counted as itself
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"
    return str(ip)
