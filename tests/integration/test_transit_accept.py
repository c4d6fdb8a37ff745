"""The relay's accept loop on real sockets: keep-alive inherited from the listener, each
handler's socket closed when it returns, a parked (detached) socket left open."""

from __future__ import annotations

import socket

import trio
from wormhole_transit.admission import Admission
from wormhole_transit.core.stats import TransitStats


async def test_accepted_sockets_keep_alive_and_are_closed_after_their_handler() -> None:
    seen: list[tuple[int, int]] = []
    detached: list[socket.socket] = []

    async def handler(stream: trio.SocketStream) -> None:
        seen.append((stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                     stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        await stream.send_all(b"hi")
        if len(seen) == 2:  # the second is kept open, as a parked waiter is
            detached.append(socket.socket(fileno=stream.socket.detach()))

    admission = Admission(TransitStats(), max_connections=10, max_connections_per_ip=10)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            await nursery.start(admission.serve, handler, listeners, nursery)
            for expect_close in (True, False):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                assert await client.receive_some() == b"hi"
                with trio.move_on_after(0.5) as waited:
                    assert await client.receive_some() == b""  # closed after its handler
                assert waited.cancelled_caught is not expect_close
                await client.aclose()
            nursery.cancel_scope.cancel()
    assert [keepalive != 0 and nodelay != 0 for keepalive, nodelay in seen] == [True, True]
    detached[0].close()
