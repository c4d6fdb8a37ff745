"""Session-wide fixtures: one PostgreSQL for all tests, a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.postgres import TestCluster


@pytest.fixture(scope="session")
def server_database_url() -> Iterator[str]:
    """WORMHOLE_TEST_DATABASE_URL if set (its role must be allowed to create databases)."""
    given = os.environ.get("WORMHOLE_TEST_DATABASE_URL")
    if given:
        yield given
        return
    cluster = TestCluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def database_url(server_database_url: str) -> Iterator[str]:
    """An empty database of its own for one test, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_database_url)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
