"""The port's HTTP front over in-memory streams: plain requests, upgrades, slow handshakes."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from wormhole_common.http import split_head
from wormhole_common.wsconnection import Upgrade
from wormhole_mailbox.core.addresses import PeerAddress
from wormhole_mailbox.front import (
    HANDSHAKE_SECONDS,
    LIVENESS_BODY,
    is_upgrade,
    plain_response,
    serve_stream,
)
from wormhole_mailbox.metrics import MailboxMetrics

PEER = PeerAddress("198.51.100.4", 1234)


@pytest.mark.parametrize(("head", "upgrade"), [
    (b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", True),
    (b"GET /v1 HTTP/1.1\r\nHost: x\r\nupgrade:  WebSocket\r\n\r\n", True),
    (b"GET /v1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n", False),
    (b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n", False),
    (b"GET /websocket HTTP/1.1\r\nHost: x\r\n\r\n", False),  # only the headers count
])
def test_is_upgrade_reads_the_upgrade_header(head: bytes, upgrade: bool) -> None:
    assert is_upgrade(split_head(head)[0]) is upgrade


@pytest.mark.parametrize(("request_line", "status", "body"), [
    (b"GET / HTTP/1.1", b"200", LIVENESS_BODY),
    (b"HEAD / HTTP/1.1", b"200", b""),
    (b"GET /v1 HTTP/1.1", b"426", b"WebSocket endpoint\n"),
    (b"GET /v1/ HTTP/1.1", b"426", b"WebSocket endpoint\n"),
    (b"POST / HTTP/1.1", b"404", b"Not Found\n"),
    (b"GET /elsewhere HTTP/1.1", b"404", b"Not Found\n"),
])
def test_plain_requests_get_small_answers(request_line: bytes, status: bytes, body: bytes) -> None:
    answer = plain_response(split_head(request_line + b"\r\nHost: x\r\n\r\n")[0])
    assert answer.split(b" ")[1] == status
    assert answer.partition(b"\r\n\r\n")[2] == body


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, PeerAddress]] = []

    async def __call__(self, request: Upgrade, peer: PeerAddress) -> None:
        self.requests.append((request.path, peer))
        await request.reject(404)


async def serve(request: bytes) -> tuple[bytes, MailboxMetrics, Recorder]:
    """Send `request`, read until the front closes; the answer, the metrics, the handler."""
    metrics = MailboxMetrics(CollectorRegistry())
    handler = Recorder()
    client, server = trio.testing.memory_stream_pair()
    answer = b""
    with trio.fail_after(3 * HANDSHAKE_SECONDS):  # virtual seconds under the autojump clock
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_stream, server, PEER, handler, metrics)
            await client.send_all(request)
            while chunk := await client.receive_some():
                answer += chunk
    return answer, metrics, handler


def count(metrics: MailboxMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"wormhole_mailbox_{name}", labels)


async def test_a_plain_request_is_answered_and_counted() -> None:
    answer, metrics, handler = await serve(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(LIVENESS_BODY)
    assert count(metrics, "connections_total", kind="http") == 1
    assert handler.requests == []


async def test_an_upgrade_goes_to_the_handler_with_the_peer() -> None:
    request = (b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    answer, metrics, handler = await serve(request)
    assert handler.requests == [("/v1", PEER)]
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert count(metrics, "connections_total", kind="http") == 0


@pytest.mark.parametrize(("missing", "status"), [
    (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"400"),
    (b"Sec-WebSocket-Version: 13\r\n", b"426"),
    (b"Connection: Upgrade\r\n", b"400"),
])
async def test_an_upgrade_missing_a_header_is_answered_without_the_handler(
    missing: bytes, status: bytes,
) -> None:
    request = (b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    answer, metrics, handler = await serve(request.replace(missing, b""))
    assert answer.split(b" ")[1] == status
    assert handler.requests == []
    assert count(metrics, "connections_dropped_total", reason="bad_upgrade") == 1


async def test_a_request_head_that_never_ends_is_dropped_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answer, metrics, handler = await serve(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert answer == b""
    assert count(metrics, "connections_dropped_total", reason="handshake_timeout") == 1
    assert handler.requests == []
