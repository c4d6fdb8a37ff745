"""What per-address limits count by (both services), and how an address is written."""

from __future__ import annotations

import pytest
from wormhole_common.core.addresses import address_key
from wormhole_common.listening import endpoint


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.1", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),  # an IPv4 client of a dual-stack socket
    ("::ffff:c000:201", "192.0.2.1"),  # the same, written in hex
    ("0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"),
    ("::1", "::/64"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb:cccc:dddd:eeee", "2001:db8:1:2::/64"),
    ("::192.0.2.1", "::/64"),  # IPv4-compatible (deprecated), not mapped: an IPv6 address
    ("peer-1", "peer-1"),
])
def test_address_key(host: str, key: str) -> None:
    assert address_key(host) == key


def test_a_mapped_address_and_its_ipv4_address_are_one_key() -> None:
    assert address_key("::ffff:203.0.113.9") == address_key("203.0.113.9")


@pytest.mark.parametrize(("host", "port", "text"), [
    ("::", 4000, "[::]:4000"), ("0.0.0.0", 4000, "0.0.0.0:4000"), ("::1", 1, "[::1]:1"),
    ("example.org", 443, "example.org:443"),
])
def test_endpoint(host: str, port: int, text: str) -> None:
    assert endpoint(host, port) == text
