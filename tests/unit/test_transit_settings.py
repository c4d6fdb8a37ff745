"""`TRANSIT_DATABASE_PASSWORD` and its `_FILE` form (the compose stack's Docker secret)."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from wormhole_common.settings import ConfigError
from wormhole_transit.settings import TransitSettings

from tests.support.environment import settings_from

URL = "postgresql://wormhole@postgres:5432/wormhole"


def test_no_password_keeps_the_url() -> None:
    s = settings_from(TransitSettings, {"TRANSIT_DATABASE_URL": URL,
                                                "TRANSIT_DATABASE_PASSWORD": ""})
    assert s.database_password is None
    assert s.connection_string() == URL


def test_no_database_is_still_allowed() -> None:
    s = settings_from(TransitSettings, {"TRANSIT_DATABASE_PASSWORD": "pw"})
    assert s.connection_string() is None


def test_password_variable_is_added_to_the_url() -> None:
    s = settings_from(TransitSettings, {"TRANSIT_DATABASE_URL": URL,
                                                "TRANSIT_DATABASE_PASSWORD": "s3cret"})
    params = conninfo_to_dict(s.connection_string() or "")
    assert params == {"user": "wormhole", "host": "postgres", "port": "5432",
                      "dbname": "wormhole", "password": "s3cret"}


def test_password_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "postgres_password.txt"
    secret.write_text("from-a-file\n")
    s = settings_from(TransitSettings, {"TRANSIT_DATABASE_URL": URL,
                                                "TRANSIT_DATABASE_PASSWORD_FILE": str(secret)})
    assert conninfo_to_dict(s.connection_string() or "")["password"] == "from-a-file"


def test_unreadable_password_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="TRANSIT_DATABASE_PASSWORD_FILE="):
        settings_from(TransitSettings, {"TRANSIT_DATABASE_URL": URL,
                                                "TRANSIT_DATABASE_PASSWORD_FILE": str(missing)})
