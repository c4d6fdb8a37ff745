"""Accepting connections, and closing them, without a cancelled scope per connection.

`trio.serve_listeners` closes each handler's stream with `aclose_forcefully`, which enters a
cancelled scope and raises and catches a `Cancelled`: in a storm of short connections that
was a tenth of a service's CPU. Here a socket is closed directly (`close_now`, no checkpoint
needed: closing a socket never blocks), and running out of descriptors or memory backs off
as trio's loop does.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

Handler = Callable[[trio.SocketStream], Awaitable[None]]
# accept() failing for want of resources: wait a little, as `trio.serve_listeners` does
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF_SECONDS = 0.1
# ...or because that client is already gone, or a firewall said no: skip it (as trio does)
IGNORED_ERRNOS = {getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
    "EOPNOTSUPP", "ENETUNREACH", "EPERM", "EAGAIN") if hasattr(errno, name)}


async def close_now(stream: trio.abc.AsyncResource) -> None:
    """Close at once: a socket directly, anything else (tests' memory streams) forcefully."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()  # a socket its owner detached is left alone
    else:
        await trio.aclose_forcefully(stream)


async def _serve_one(handler: Handler, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        stream.socket.close()


async def accept_loop(
    listener: trio.SocketListener, handler: Handler, nursery: trio.Nursery,
    on_failure: Callable[[OSError], None] = lambda _exc: None,
) -> None:
    """Run `handler` in `nursery` for each connection until cancelled; its socket is closed
    when it returns. `on_failure` hears of each accept that failed for want of resources
    (then the loop waits a little) or for any other reason not about one client (then it
    raises). The listener is closed when the loop ends."""
    sock = listener.socket
    try:
        while True:
            try:
                accepted, _ = await sock.accept()
            except OSError as exc:
                if exc.errno in IGNORED_ERRNOS:
                    continue
                on_failure(exc)
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                log.warning("accept failed (%s); waiting %.1f s",
                            errno.errorcode.get(exc.errno or 0, exc), ACCEPT_BACKOFF_SECONDS)
                await trio.sleep(ACCEPT_BACKOFF_SECONDS)
                continue
            nursery.start_soon(_serve_one, handler, trio.SocketStream(accepted))
    finally:
        sock.close()


async def serve_listeners(
    handler: Handler, listeners: list[trio.SocketListener], nursery: trio.Nursery,
    on_failure: Callable[[OSError], None] = lambda _exc: None, *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`accept_loop` on each listener, until cancelled."""
    async with trio.open_nursery() as accepting:
        for listener in listeners:
            accepting.start_soon(accept_loop, listener, handler, nursery, on_failure)
        task_status.started(listeners)
