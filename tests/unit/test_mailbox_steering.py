"""The program that sends each client address to one worker, run here by a small classic BPF
interpreter over IP headers (IPv4 packets, also those a dual-stack IPv6 socket receives, and
IPv6 ones), agrees with `worker_for`, and spreads addresses over workers."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from wormhole_common.core.addresses import address_key
from wormhole_mailbox.steering import (
    JEQ_K,
    LD_B_ABS,
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


def ip_header(host: str, ttl: int = 64) -> bytes:
    """The IP header of a packet from `host` (an IPv4-mapped one travels as IPv4), with
    random bytes where the program must not look."""
    ip = ipaddress.ip_address(host)
    noise = random.Random(host).randbytes
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):  # version 4, header length 5 words
        return b"\x45" + noise(7) + bytes([ttl]) + noise(3) + ip.packed + noise(4)
    return b"\x60" + noise(6) + bytes([ttl]) + ip.packed + noise(16)


def run(instructions: list[Instruction], header: bytes) -> int:
    """What the kernel returns for a packet with this IP header (the opcodes used only)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = instructions[pc]
        pc += 1
        if code == LD_B_ABS:
            a = header[k - SKF_NET_OFF]
        elif code == LD_W_ABS:
            offset = k - SKF_NET_OFF
            a = int.from_bytes(header[offset:offset + 4], "big")
        elif code == JEQ_K:
            pc += jt if a == k else jf
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


def random_hosts(count: int) -> list[str]:
    rng = random.Random(16)
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(count)]
    v6 = [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(count)]
    return v4 + v6


@pytest.mark.parametrize("workers", [2, 3, 4, 16, 256])
def test_the_program_sends_each_address_where_worker_for_says(workers: int) -> None:
    hosts = random_hosts(500)
    for host in [*hosts, *(f"::ffff:{host}" for host in hosts if ":" not in host)]:
        for ttl in (64, 128):  # hosts behind one NAT: the same key whatever their system
            assert run(program(workers), ip_header(host, ttl)) == worker_for(host, workers)


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
