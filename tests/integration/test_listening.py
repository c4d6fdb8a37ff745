"""The services' listening sockets: `::` takes both families on one socket, an address of
one family takes that family only, and a kernel without IPv6 gets 0.0.0.0 and a log line."""

from __future__ import annotations

import logging
import socket

import pytest
import trio
from wormhole_common import listening
from wormhole_common.listening import bound, open_listeners
from wormhole_common.startup import StartupError, check_port

LIMIT = 10


async def peer_of(listener: trio.SocketListener, host: str) -> str:
    """Connect to `listener` from `host`; the address the server sees."""
    port = listener.socket.getsockname()[1]
    async with await trio.open_tcp_stream(host, port), await listener.accept() as accepted:
        return str(accepted.socket.getpeername()[0])


async def test_dual_stack_takes_ipv6_and_ipv4_on_one_socket() -> None:
    with trio.fail_after(LIMIT):
        (listener,) = await open_listeners(0, "::")
        async with listener:
            assert listener.socket.family == socket.AF_INET6
            assert listener.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
            assert bound([listener]) == f"[::]:{listener.socket.getsockname()[1]}"
            assert await peer_of(listener, "::1") == "::1"
            assert await peer_of(listener, "127.0.0.1") == "::ffff:127.0.0.1"


@pytest.mark.parametrize(("host", "other"), [("127.0.0.1", "::1"), ("::1", "127.0.0.1")])
async def test_an_address_of_one_family_takes_that_family_only(host: str, other: str) -> None:
    with trio.fail_after(LIMIT):
        (listener,) = await open_listeners(0, host)
        async with listener:
            assert await peer_of(listener, host) == host
            with pytest.raises(OSError):
                await trio.open_tcp_stream(other, listener.socket.getsockname()[1])


async def test_without_ipv6_dual_stack_falls_back_to_ipv4_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(listening, "dual_stack_socket", lambda _port: None)  # no AF_INET6
    with trio.fail_after(LIMIT), caplog.at_level(logging.WARNING):
        (listener,) = await open_listeners(0, "::")
        async with listener:
            assert listener.socket.family == socket.AF_INET
            assert bound([listener]) == f"0.0.0.0:{listener.socket.getsockname()[1]}"
            assert await peer_of(listener, "127.0.0.1") == "127.0.0.1"
    assert caplog.messages == ["this machine has no IPv6: listening on 0.0.0.0 (IPv4 only)"
                               " instead of ::"]


def test_the_start_up_check_of_dual_stack_sees_a_port_held_over_ipv4() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as caught:
            check_port("MAILBOX_PORT", "::", port)
    assert str(caught.value) == (f"cannot listen on [::]:{port} (MAILBOX_PORT={port}):"
                                 " address already in use")
