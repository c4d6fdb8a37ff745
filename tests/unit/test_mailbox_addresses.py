"""The address a client is told about (`welcome.your-address`, docs/mailbox-protocol.md §2.6)."""

from __future__ import annotations

import ipaddress

import pytest
from wormhole_mailbox.core.addresses import (
    Network,
    PeerAddress,
    is_trusted_proxy,
    parse_ip,
    parse_port,
    peer_address,
)

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


# -- garbled proxy headers are not believed --------------------------------------------------------


@pytest.mark.parametrize("real_ip", [b"not-an-address", b"1.2.3.4, 5.6.7.8", b"1.2.3.4 5.6.7.8",
                                     b"[2001:db8::1]", b"1.2.3.4:80", b"", b"fe80::1%eth0",
                                     b"01.2.3.4", b"203.0.113.5\x00"])
def test_garbled_real_ip_falls_back_to_the_socket_peer(real_ip: bytes) -> None:
    headers = [(b"X-Real-IP", real_ip), (b"X-Real-Port", b"999")]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("10.1.2.3", 55)


def test_repeated_real_ip_is_not_believed() -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5"), (b"X-Real-IP", b"198.51.100.1")]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("10.1.2.3", 55)


def test_garbled_real_ip_falls_back_to_forwarded_for() -> None:
    headers = [(b"X-Real-IP", b"not-an-address"), (b"X-Forwarded-For", b"203.0.113.5")]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("203.0.113.5", 55)


@pytest.mark.parametrize("port", [b"99999", b"0", b"65536", b"-1", b"80, 81", b"\xd9\xa3",
                                  b"1e3", b"", b"123456"])
def test_real_port_out_of_range_uses_the_socket_port(port: bytes) -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5"), (b"X-Real-Port", port)]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("203.0.113.5", 55)


@pytest.mark.parametrize("port", [(b"1", 1), (b"65535", 65535), (b" 443 ", 443)])
def test_real_port_in_range(port: tuple[bytes, int]) -> None:
    headers = [(b"X-Real-IP", b"203.0.113.5"), (b"X-Real-Port", port[0])]
    assert peer_address("10.1.2.3", 55, headers, PROXY).port == port[1]


@pytest.mark.parametrize("forwarded", [b"garbage", b"203.0.113.5, garbage", b"garbage, 10.0.0.9",
                                       b"203.0.113.5:1234", b", ,", b"[2001:db8::1]"])
def test_garbled_forwarded_for_falls_back_to_the_socket_peer(forwarded: bytes) -> None:
    headers = [(b"X-Forwarded-For", forwarded)]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("10.1.2.3", 55)


def test_garbage_left_of_the_client_is_not_looked_at() -> None:
    headers = [(b"X-Forwarded-For", b"garbage, 203.0.113.5, 10.0.0.9")]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("203.0.113.5", 55)


def test_repeated_forwarded_for_headers_form_one_list() -> None:
    headers = [(b"X-Forwarded-For", b"198.51.100.66"), (b"X-Forwarded-For", b"203.0.113.5")]
    assert peer_address("10.1.2.3", 55, headers, PROXY) == PeerAddress("203.0.113.5", 55)


def test_forwarded_for_mapped_ipv4_is_reported_as_ipv4() -> None:
    headers = [(b"X-Forwarded-For", b"::ffff:203.0.113.5")]
    assert peer_address("10.1.2.3", 55, headers, PROXY).welcome_form() == {
        "port": 55, "ipv4": "203.0.113.5"}


def test_parse_ip_and_port() -> None:
    assert str(parse_ip("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_ip("example.org") is None
    assert parse_port("8080") == 8080
    assert parse_port("\u0663") is None  # an Arabic-Indic digit: int() takes it, we do not


def test_is_trusted_proxy() -> None:
    assert is_trusted_proxy("10.1.2.3", PROXY)
    assert is_trusted_proxy("::ffff:10.1.2.3", PROXY)
    assert not is_trusted_proxy("192.0.2.1", PROXY)
    assert not is_trusted_proxy("10.1.2.3", NONE)
    assert not is_trusted_proxy("not-an-address", PROXY)
