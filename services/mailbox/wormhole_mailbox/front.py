"""The HTTP front of the mailbox port: WebSocket upgrades go to the handler, plain requests
get a tiny answer (`GET /` is a liveness page, docs/mailbox-protocol.md §2.2).

The request head is read here first, to route the request; a valid upgrade becomes a
`wsconnection.Upgrade` for the handler, which refuses it or accepts it (the WebSocket, from
the 101 on, is `wormhole_common.wsconnection`: framing errors close 1002, invalid UTF-8 1007,
a message announced over `MAX_MESSAGE_BYTES` 1009 at its header).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio
from wormhole_common.accepting import close_now
from wormhole_common.core.websocket import (
    INVALID_PAYLOAD,
    PROTOCOL_ERROR,
    TOO_BIG,
    HandshakeError,
    Request,
    check_host,
    header,
)
from wormhole_common.http import answer, read_head, refusal, response, split_head
from wormhole_common.wsconnection import Upgrade, WebSocket

from wormhole_mailbox.core.addresses import Network, PeerAddress, is_trusted_proxy
from wormhole_mailbox.core.limits import Connections, Refusal
from wormhole_mailbox.metrics import MailboxMetrics

LIVENESS_BODY = b"Wormhole Relay\n"
MAX_MESSAGE_BYTES = 1 << 20
HANDSHAKE_SECONDS = 10  # to send a request head, and again to complete the upgrade
REFUSAL_SECONDS = 1  # to send a refused client its request head and read our 503

# Serves an upgrade; returns the connection it accepted, if any, once that has ended.
WebSocketHandler = Callable[[Upgrade, PeerAddress], Awaitable[WebSocket | None]]
# Close codes of a client's protocol violations, as `connections_dropped_total` reasons.
VIOLATIONS = {PROTOCOL_ERROR: "protocol_error", INVALID_PAYLOAD: "invalid_utf8",
              TOO_BIG: "too_big"}


async def serve_socket(
    stream: trio.SocketStream, handle: WebSocketHandler, metrics: MailboxMetrics,
    connections: Connections, trusted_proxies: Sequence[Network] = (),
) -> None:
    """An accepted TCP connection, admitted (`limits.Connections`: in total, then per address
    for a direct client, before any byte is read) and served by `serve_stream`."""
    if refusal := connections.accept():
        await refuse(stream, refusal, metrics, connections)
        return
    try:
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:  # the client is gone already
            await close_now(stream)
            return
        peer = PeerAddress(str(host), int(port))
        if is_trusted_proxy(peer.host, trusted_proxies):  # counted once the head names it
            await serve_stream(stream, peer, handle, metrics)
            return
        if refusal := connections.admit(peer.host):
            await refuse(stream, refusal, metrics, connections)
            return
        try:
            await serve_stream(stream, peer, handle, metrics)
        finally:
            connections.leave(peer.host)
    finally:
        connections.closed()


async def refuse(
    stream: trio.SocketStream, refusal: Refusal, metrics: MailboxMetrics,
    connections: Connections,
) -> None:
    """A 503 with the refusal's text, counted. The request head is read first (briefly), so
    closing does not reset the connection under the client before it reads the answer; in a
    flood, past `ANSWERED_REFUSALS` at once, the socket is just closed."""
    metrics.refusals[refusal.reason].inc()
    if connections.answer_refusal():
        try:
            with trio.move_on_after(REFUSAL_SECONDS):
                await read_head(stream)
                # no linger: a refused socket must not hold its place (the head was read)
                await stream.send_all(response(503, refusal.text.encode() + b"\n"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, HandshakeError):
            pass
        finally:
            connections.answered()
    await close_now(stream)


async def serve_stream(
    stream: trio.abc.Stream, peer: PeerAddress, handle: WebSocketHandler,
    metrics: MailboxMetrics,
) -> None:
    """One connection: a WebSocket upgrade goes to `handle`, a plain request is answered."""
    try:
        upgrade: tuple[Request, bytes] | None = None
        with trio.move_on_after(HANDSHAKE_SECONDS) as handshake:
            try:
                head = await read_head(stream)
            except HandshakeError as exc:  # a head over the limit
                metrics.dropped["head_too_large"].inc()
                await answer(stream, refusal(exc))
                return
            if head is not None:
                upgrade = await _route(stream, head, metrics)
        if upgrade is not None:
            await serve_websocket(stream, upgrade, peer, handle, metrics)
        elif handshake.cancelled_caught:
            metrics.dropped["handshake_timeout"].inc()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await close_now(stream)


async def _route(stream: trio.abc.Stream, head: bytes, metrics: MailboxMetrics,
                 ) -> tuple[Request, bytes] | None:
    """The request, parsed once: an upgrade (with what came after its head) is returned for
    the WebSocket; anything else is answered here."""
    try:
        request, buffered = split_head(head)
    except HandshakeError as exc:  # not HTTP/1.x
        metrics.connections["http"].inc()
        await answer(stream, refusal(exc))
        return None
    if is_upgrade(request):
        return request, buffered
    metrics.connections["http"].inc()
    await answer(stream, plain_response(request))
    return None


async def serve_websocket(
    stream: trio.abc.Stream, parsed: tuple[Request, bytes], peer: PeerAddress,
    handle: WebSocketHandler, metrics: MailboxMetrics,
) -> None:
    """The upgrade (the request and what came after its head): refused with an HTTP answer
    if invalid, else served by `handle`."""
    upgrade = await Upgrade.read(stream, *parsed, MAX_MESSAGE_BYTES)
    if upgrade is None:
        metrics.dropped["bad_upgrade"].inc()
        return
    ws = await handle(upgrade, peer)
    if ws is not None and ws.violation is not None:
        metrics.dropped[VIOLATIONS[ws.violation.code]].inc()
    elif ws is not None and ws.stalled:
        metrics.dropped["write_timeout"].inc()


def is_upgrade(request: Request) -> bool:
    return b"websocket" in (header(request.headers, b"upgrade") or b"").lower()


def plain_response(request: Request) -> bytes:
    """The whole answer to a request that is not a WebSocket upgrade."""
    try:
        check_host(request)
    except HandshakeError as exc:
        return refusal(exc)
    method, path = request.method.decode("latin-1"), request.target.decode("latin-1")
    head_only = method == "HEAD"
    if method in ("GET", "HEAD") and path == "/":
        return response(200, LIVENESS_BODY, head_only=head_only)
    if path.rstrip("/") == "/v1":
        return response(426, b"WebSocket endpoint\n", head_only=head_only)
    return response(404, b"Not Found\n", head_only=head_only)
