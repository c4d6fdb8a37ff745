"""The address a client is told about (`welcome.your-address`, spec 1.3)."""

from __future__ import annotations

import ipaddress

from wormhole_mailbox.addresses import Network, PeerAddress, peer_address

PROXY = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
NONE: tuple[Network, ...] = ()


def test_socket_peer_ipv4() -> None:
    address = peer_address("192.0.2.1", 4321, [], NONE)
    assert address == PeerAddress("192.0.2.1", 4321)
    assert address.welcome_form() == {"port": 4321, "ipv4": "192.0.2.1"}


def test_ipv4_mapped_ipv6_is_reported_as_ipv4() -> None:
    address = peer_address("::ffff:192.0.2.9", 80, [], NONE)
    assert address.welcome_form() == {"port": 80, "ipv4": "192.0.2.9"}


def test_ipv6_peer() -> None:
    address = peer_address("2001:db8::5", 443, [], NONE)
    assert address.welcome_form() == {"port": 443, "ipv6": "2001:db8::5"}


def test_ipv6_is_normalised() -> None:
    assert peer_address("2001:DB8:0:0::5", 1, [], NONE).host == "2001:db8::5"


def test_headers_from_untrusted_peer_are_ignored() -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5"), (b"X-Real-Port", b"999"),
               (b"X-Forwarded-For", b"198.51.100.1")]
    assert peer_address("192.0.2.1", 4321, headers, PROXY) == PeerAddress("192.0.2.1", 4321)
    assert peer_address("10.0.0.1", 4321, headers, NONE) == PeerAddress("10.0.0.1", 4321)


def test_real_ip_and_port_from_trusted_proxy() -> None:
    headers = [(b"x-real-ip", b"203.0.113.5"), (b"x-real-port", b"999")]
    assert peer_address("10.1.2.3", 4321, headers, PROXY) == PeerAddress("203.0.113.5", 999)


def test_header_names_are_case_insensitive() -> None:
    headers = [(b"X-REAL-IP", b"203.0.113.5"), (b"X-Real-Port", b"999")]
    assert peer_address("10.1.2.3", 4321, headers, PROXY) == PeerAddress("203.0.113.5", 999)


def test_real_ip_without_real_port_uses_the_socket_port() -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5")]
    assert peer_address("10.1.2.3", 4321, headers, PROXY) == PeerAddress("203.0.113.5", 4321)


def test_real_ip_with_bad_port_uses_the_socket_port() -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5"), (b"X-Real-Port", b"http")]
    assert peer_address("10.1.2.3", 4321, headers, PROXY) == PeerAddress("203.0.113.5", 4321)


def test_real_ip_v6_and_mapped() -> None:
    v6 = peer_address("10.1.2.3", 1, [(b"X-Real-IP", b"2001:db8::7")], PROXY)
    assert v6.welcome_form() == {"port": 1, "ipv6": "2001:db8::7"}
    mapped = peer_address("10.1.2.3", 1, [(b"X-Real-IP", b"::ffff:203.0.113.5")], PROXY)
    assert mapped.welcome_form() == {"port": 1, "ipv4": "203.0.113.5"}


def test_trusted_proxy_over_mapped_ipv4_socket() -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5")]
    assert peer_address("::ffff:10.0.0.2", 7, headers, PROXY) == PeerAddress("203.0.113.5", 7)


def test_trusted_ipv6_proxy() -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5"), (b"X-Real-Port", b"8")]
    assert peer_address("fd00::1", 7, headers, PROXY) == PeerAddress("203.0.113.5", 8)


def test_forwarded_for_takes_the_rightmost_untrusted_entry() -> None:
    headers = [(b"X-Forwarded-For", b"198.51.100.66, 203.0.113.5, 10.0.0.9")]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("203.0.113.5", 55)


def test_forwarded_for_of_only_proxies_falls_back_to_the_socket() -> None:
    headers = [(b"X-Forwarded-For", b"10.0.0.9, 10.0.0.8")]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("10.1.2.3", 55)


def test_real_ip_wins_over_forwarded_for() -> None:
    headers = [(b"X-Forwarded-For", b"198.51.100.1"), (b"X-Real-IP", b"203.0.113.5")]
    assert peer_address("10.1.2.3", 55, headers, PROXY).host == "203.0.113.5"


def test_trusted_proxy_without_headers_is_the_socket_peer() -> None:
    assert peer_address("10.1.2.3", 55, [], PROXY) == PeerAddress("10.1.2.3", 55)
