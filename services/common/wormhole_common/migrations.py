"""Versioned SQL migrations, applied at start under an advisory lock.

Each service ships `NNNN_description.sql` files in a `migrations` folder of its package. All
pending files are applied in one transaction that first takes a transaction-scoped advisory
lock, so two processes starting at once apply each migration exactly once: the second waits,
then finds nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from wormhole_common.database import Database

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process of the stack.
MIGRATION_LOCK_KEY = 0x776F726D686F6C65  # "wormhole"

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(package: str) -> list[Migration]:
    """The migrations shipped in `<package>.migrations`, in version order."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {package}: {versions}")
    return found


def apply_pending(
    conn: psycopg.Connection, component: str, migrations: list[Migration]
) -> list[int]:
    """Apply what is missing; runs inside the caller's transaction. Returns applied versions."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            component  text        NOT NULL,
            version    integer     NOT NULL,
            name       text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (component, version)
        )
        """
    )
    rows = conn.execute(
        "SELECT version FROM schema_migrations WHERE component = %s", (component,)
    ).fetchall()
    done = {row[0] for row in rows}
    known = {m.version for m in migrations}
    unknown = sorted(done - known)
    if unknown:
        raise RuntimeError(
            f"database has {component} schema versions {unknown} that this release does not know;"
            " refusing to run an older release against a newer schema"
        )
    applied = []
    for migration in migrations:
        if migration.version in done:
            continue
        conn.execute(migration.sql.encode("utf-8"))
        conn.execute(
            "INSERT INTO schema_migrations (component, version, name) VALUES (%s, %s, %s)",
            (component, migration.version, migration.name),
        )
        applied.append(migration.version)
    return applied


async def migrate(db: Database, component: str, package: str) -> list[int]:
    """Bring `component`'s schema up to date; safe to call from several processes at once."""
    migrations = discover(package)
    applied = await db.run(lambda conn: apply_pending(conn, component, migrations))
    if applied:
        log.info("applied %s migrations %s", component, applied)
    return applied
