"""Open-file limit: raise it at start, and size connection limits so it is never reached.

Every connection is a file descriptor. At the common soft limit of 1024 a flood of idle
connections used to make accept fail (a traceback per refusal) and `/readyz` unreachable, so a
service raises the soft limit to the hard one (`raise_open_file_limit`) and admits no more
connections than the limit it got leaves after a reserve (`connection_limits`).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Linux refuses RLIM_INFINITY for RLIMIT_NOFILE (the ceiling is fs.nr_open, 2^20 by default);
# macOS refuses more than OPEN_MAX. An infinite hard limit is asked for as this much.
INFINITE_AS = 1 << 20

# Descriptors never given to clients: stdin/out/err, log files, listeners (the service port
# and the metrics port, one socket per address family each), `/metrics` and `/readyz` requests
# in flight (Prometheus scrapes one at a time; orchestrators probe one at a time), DNS lookups,
# the sockets accepted but not yet counted (one per listener), with room to spare.
RESERVED_DESCRIPTORS = 64
MEMORY_CEILING = 10_000  # connections: about 32 KiB each while idle, 320 MiB in all
ADDRESSES_SERVED = 4  # per-address limit at most a quarter of the total: others still get in


def target_limit(soft: int, hard: int) -> int | None:
    """The soft limit to ask for, or None when there is nothing to raise."""
    if soft == resource.RLIM_INFINITY:
        return None
    want = INFINITE_AS if hard == resource.RLIM_INFINITY else hard
    return want if want > soft else None


def usable(limit: int) -> int:
    """A limit as a number of descriptors (RLIM_INFINITY is -1 on Linux)."""
    return INFINITE_AS if limit == resource.RLIM_INFINITY else limit


def raise_open_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; return the soft limit now in force.

    A failure (a container that forbids it, macOS's OPEN_MAX) is logged, not fatal: the
    returned limit is then the old one, and connection limits are sized from that.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target_limit(soft, hard)
    if want is None:
        return usable(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, want, exc)
        return usable(soft)
    log.info("raised the open-file limit from %d to %d", soft, want)
    return want


@dataclass(frozen=True)
class ConnectionLimits:
    total: int
    per_address: int


def connection_limits(
    open_files: int, *, database_connections: int, per_address: int,
    ceiling: int = MEMORY_CEILING,
) -> ConnectionLimits:
    """Default connection limits that keep descriptors for everything else.

    `database_connections`: the pool plus any dedicated connection (LISTEN). The reserve is
    never more than half the descriptors, so even a tiny limit serves some clients; the
    per-address limit is capped so that `ADDRESSES_SERVED` addresses fit in the total.
    """
    reserve = min(RESERVED_DESCRIPTORS + database_connections, open_files // 2)
    total = max(1, min(ceiling, open_files - reserve))
    return ConnectionLimits(total, max(1, min(per_address, total // ADDRESSES_SERVED)))
