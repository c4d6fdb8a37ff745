"""Each client address to one worker, so per-address limits hold for the whole server.

With `MAILBOX_WORKERS` > 1 each worker gets its own listening socket, all on the one port in a
SO_REUSEPORT group, and the group gets a classic BPF program (SO_ATTACH_REUSEPORT_CBPF) that
picks the socket of each new connection from its source address alone: the IPv4 address (also
of an IPv4 client of the dual-stack socket, whose packets are IPv4), or an IPv6 address's /64,
which is what `address_key` counts by. Every connection,
allocation and claim from one address then reaches one worker, whose per-address state is
therefore the server's: exact, and free per connection (the kernel runs at most twelve
instructions per SYN). The alternatives were worse: dividing each cap among the workers
(`LimitSettings.shared_by`) refuses an honest address early whenever the kernel spreads its
connections unevenly, and gives each worker a burst of one once the workers outnumber a rate;
a counter shared by the workers costs a lock or a table per connection and per command.

Dividing stays the fallback where steering cannot work: behind a trusted proxy (the socket
address is the proxy's, so steering would put every client on one worker), with
`MAILBOX_WORKERS_BY_ADDRESS=false`, or where the kernel refuses the program (not Linux).

What steering costs: load is spread by address, not by which worker is idle. Many addresses
spread evenly, but one busy address (a large NAT) is served by one worker, and the addresses
of a worker that died wait in its socket's queue, which the supervisor keeps, until it is
restarted (its per-address counts start again from zero: the connections it held are gone,
but its addresses may get another burst of allocations and new mailboxes).
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import trio
from wormhole_common.listening import DUAL_STACK, IPV4_ANY, MAX_BACKLOG, NO_IPV6, open_listeners

log = logging.getLogger(__name__)

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>; not in Python's socket module
SKF_NET_OFF = -0x100000  # a load at SKF_NET_OFF + n reads byte n of the IP header
IPV4_SOURCE = 12  # where the source address is in an IPv4 header
IPV6_SOURCE = 8  # ...and in an IPv6 header (its /64: the two words from here)
# Opcodes of <linux/filter.h> that the program uses.
LD_B_ABS = 0x30  # A = the byte at k
LD_W_ABS = 0x20  # A = the 32-bit word at k, in network order
JEQ_K = 0x15  # skip jt instructions if A == k, else jf
MUL_K = 0x24  # A *= k (mod 2**32)
RSH_K = 0x74  # A >>= k
MOD_K = 0x94  # A %= k
XOR_X = 0xAC  # A ^= X
TAX = 0x07  # X = A
RET_A = 0x16  # the socket at index A of the group
MULTIPLIER = 0x9E3779B1  # 2**32 / the golden ratio: Knuth's multiplicative hash
WORD = 0xFFFFFFFF

Instruction = tuple[int, int, int, int]  # struct sock_filter: (code, jt, jf, k)


def program(workers: int) -> list[Instruction]:
    """The index of the worker for a connection's source address, as `worker_for` says. One
    program for every socket: a dual-stack IPv6 socket receives IPv4 packets too, so the IP
    version is read from the packet, not assumed from the socket."""
    def index(load: list[Instruction]) -> list[Instruction]:
        return [*load, (MUL_K, 0, 0, MULTIPLIER), (RSH_K, 0, 0, 16), (MOD_K, 0, 0, workers),
                (RET_A, 0, 0, 0)]

    ipv4 = index([(LD_W_ABS, 0, 0, SKF_NET_OFF + IPV4_SOURCE)])
    ipv6 = index([(LD_W_ABS, 0, 0, SKF_NET_OFF + IPV6_SOURCE), (MUL_K, 0, 0, MULTIPLIER),
                  (TAX, 0, 0, 0), (LD_W_ABS, 0, 0, SKF_NET_OFF + IPV6_SOURCE + 4),
                  (XOR_X, 0, 0, 0)])
    version = [(LD_B_ABS, 0, 0, SKF_NET_OFF), (RSH_K, 0, 0, 4), (JEQ_K, 0, len(ipv4), 4)]
    return [*version, *ipv4, *ipv6]


def worker_for(host: str, workers: int) -> int:
    """The worker that serves every connection from `host` (what `program` computes; an
    IPv4-mapped IPv6 address counts as its IPv4 address, as in `address_key`)."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        word = int(ip)
    else:
        prefix = int(ip) >> 64
        word = ((prefix >> 32) * MULTIPLIER & WORD) ^ (prefix & WORD)
    return ((word * MULTIPLIER & WORD) >> 16) % workers


class _Filter(ctypes.Structure):  # struct sock_filter
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):  # struct sock_fprog
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


def attach(sock: socket.socket, instructions: Sequence[Instruction]) -> None:
    """Give `sock`'s SO_REUSEPORT group the program (OSError where the kernel refuses)."""
    filters = (_Filter * len(instructions))(
        *(_Filter(code, jt, jf, k & WORD) for code, jt, jf, k in instructions))
    fprog = _Program(len(instructions), ctypes.cast(filters, ctypes.POINTER(_Filter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                    ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog)))


class SteeringRefused(Exception):
    """The kernel has no SO_REUSEPORT or refuses the program: share the sockets instead."""


class Address(NamedTuple):
    family: int
    sockaddr: tuple[Any, ...]  # to bind; its port is the first socket's for the others
    dual_stack: bool = False  # an IPv6 socket that takes IPv4 clients too


def _listening(address: Address, workers: int) -> list[socket.socket]:
    """`workers` sockets on one address and port, listening in index order (a group's
    sockets are numbered in the order they listen), the group steered by `program`."""
    group: list[socket.socket] = []
    try:
        for _ in range(workers):
            sock = socket.socket(address.family, socket.SOCK_STREAM)
            group.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            except (AttributeError, OSError) as exc:
                raise SteeringRefused(f"SO_REUSEPORT: {exc}") from None
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                0 if address.dual_stack else 1)
            host, port, *rest = address.sockaddr
            sock.bind((host, group[0].getsockname()[1] if len(group) > 1 else port, *rest))
            sock.listen(MAX_BACKLOG)
        try:
            attach(group[0], program(workers))
        except OSError as exc:
            raise SteeringRefused(f"SO_ATTACH_REUSEPORT_CBPF: {exc}") from None
    except BaseException:
        for sock in group:
            sock.close()
        raise
    return group


def steered_sockets(addresses: Sequence[Address], workers: int) -> list[list[socket.socket]]:
    """Each worker's listening sockets, one per address, steered; `SteeringRefused` (or the
    socket's or bind's OSError) with none left open."""
    per_worker: list[list[socket.socket]] = [[] for _ in range(workers)]
    try:
        for address in addresses:
            for index, sock in enumerate(_listening(address, workers)):
                per_worker[index].append(sock)
    except BaseException:
        for sock in (sock for socks in per_worker for sock in socks):
            sock.close()
        raise
    return per_worker


async def steered_listeners(host: str, port: int, workers: int) -> list[list[socket.socket]]:
    """`steered_sockets` for `host:port` as `wormhole_common.listening.open_listeners` reads
    them: `::` is one dual-stack socket (each worker's), 0.0.0.0 where there is no IPv6."""
    if host == DUAL_STACK:
        try:
            return steered_sockets([Address(socket.AF_INET6, (DUAL_STACK, port), True)],
                                   workers)
        except OSError as exc:
            if exc.errno not in NO_IPV6:
                raise
        log.warning("this machine has no IPv6: listening on %s (IPv4 only) instead of %s",
                    IPV4_ANY, DUAL_STACK)
        host = IPV4_ANY
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                          flags=socket.AI_PASSIVE)
    addresses = list(dict.fromkeys(Address(family, tuple(sockaddr))
                                   for family, *_, sockaddr in infos
                                   if family in (socket.AF_INET, socket.AF_INET6)))
    return steered_sockets(addresses, workers)


@dataclass
class Routes:
    """How connections reach the workers: `listeners[i]` are worker i's sockets; per-address
    limits are divided by `split` (1: each address reaches one worker)."""

    listeners: list[list[trio.SocketListener]]
    split: int

    def all(self) -> list[trio.SocketListener]:
        unique = {id(listener): listener for socks in self.listeners for listener in socks}
        return list(unique.values())


async def open_routes(host: str, port: int, workers: int, *, by_address: bool) -> Routes:
    """Steered sockets if `by_address` and the kernel allows it, else one set shared by
    every worker (whichever accepts first takes a connection) and limits divided."""
    if by_address:
        try:
            steered = await steered_listeners(host, port, workers)
        except SteeringRefused as exc:
            log.warning("cannot send each address to one worker (%s): every worker enforces"
                        " 1/%d of each per-address limit instead", exc, workers)
        else:
            return Routes([[_listener(sock) for sock in socks] for socks in steered], 1)
    shared = await open_listeners(port, host)
    return Routes([shared] * workers, workers)


def _listener(sock: socket.socket) -> trio.SocketListener:
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
