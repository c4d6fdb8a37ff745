"""The program that sends each client address to one worker, run here by a small classic BPF
interpreter over IP headers, agrees with `worker_for`, and spreads addresses over workers."""

from __future__ import annotations

import ipaddress
import random
import socket
from collections import Counter

import pytest
from wormhole_mailbox.limits import address_key
from wormhole_mailbox.steering import (
    LD_W_ABS,
    MOD_K,
    MUL_K,
    RET_A,
    RSH_K,
    SKF_NET_OFF,
    TAX,
    WORD,
    XOR_X,
    Instruction,
    program,
    worker_for,
)


def ip_header(host: str) -> bytes:
    """The IP header of a packet from `host` (only the source address matters)."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv4Address):
        return bytes(12) + ip.packed + bytes(4)
    return bytes(8) + ip.packed + bytes(16)


def run(instructions: list[Instruction], header: bytes) -> int:
    """What the kernel returns for a packet with this IP header (the opcodes used only)."""
    a = x = 0
    for code, k in instructions:
        if code == LD_W_ABS:
            offset = k - SKF_NET_OFF
            a = int.from_bytes(header[offset:offset + 4], "big")
        elif code == MUL_K:
            a = a * k & WORD
        elif code == RSH_K:
            a >>= k
        elif code == MOD_K:
            a %= k
        elif code == XOR_X:
            a ^= x
        elif code == TAX:
            x = a
        elif code == RET_A:
            return a
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("no return")


def random_hosts(count: int) -> list[str]:
    rng = random.Random(16)
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(count)]
    v6 = [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(count)]
    return v4 + v6


@pytest.mark.parametrize("workers", [2, 3, 4, 16, 256])
def test_the_program_sends_each_address_where_worker_for_says(workers: int) -> None:
    for host in random_hosts(500):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        assert run(program(family, workers), ip_header(host)) == worker_for(host, workers)


def test_one_key_of_the_limits_is_one_worker() -> None:
    """An IPv6 /64 is one key of the limits, so one worker; an IPv4-mapped address is its
    IPv4 address."""
    for host in random_hosts(200):
        if ":" in host:
            base = int(ipaddress.IPv6Address(host)) >> 64 << 64
            same = [str(ipaddress.IPv6Address(base | low)) for low in (0, 1, (1 << 64) - 1)]
        else:
            same = [f"::ffff:{host}"]
        assert {address_key(h) for h in [host, *same]} == {address_key(host)}
        assert {worker_for(h, 4) for h in same} == {worker_for(host, 4)}


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_addresses_spread_evenly(workers: int) -> None:
    for hosts in (random_hosts(4000)[:4000], random_hosts(4000)[4000:],
                  [f"10.0.{i // 256}.{i % 256}" for i in range(4000)],  # one network's
                  [f"2001:db8:0:{i:x}::1" for i in range(4000)]):  # consecutive /64s
        counts = Counter(worker_for(host, workers) for host in hosts)
        assert len(counts) == workers
        assert max(counts.values()) < 1.2 * len(hosts) / workers
