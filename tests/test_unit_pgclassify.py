"""The direct sink's error mapping (sinks/pgclassify.py) and connection-string display (sinks/pgurl.py)."""

from __future__ import annotations

import psycopg
import pytest

from supabase_log_handler.errors import DataError, SetupError, TransientError
from supabase_log_handler.sinks.pgclassify import classify_pg, classify_sqlstate
from supabase_log_handler.sinks.pgurl import describe, looks_like_db_url


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("08006", TransientError), ("08P01", TransientError), ("40001", TransientError),
        ("40P01", TransientError), ("53300", TransientError), ("57P01", TransientError),
        ("57014", TransientError), ("55P03", TransientError), ("58030", TransientError),
        ("XX000", TransientError),
        ("42P01", SetupError), ("42703", SetupError), ("42501", SetupError), ("28P01", SetupError),
        ("3D000", SetupError), ("42601", SetupError),
        ("22P02", DataError), ("22P05", DataError), ("23514", DataError), ("23503", DataError),
        ("23502", DataError), ("54000", DataError), ("21000", DataError), ("P0001", DataError),
    ],
)  # fmt: skip
def test_each_sqlstate_maps_to_its_kind(sqlstate: str, kind: type) -> None:
    """Connection/serialisation/resource classes retry, missing objects and logins need a person, refused values are data."""
    error = classify_sqlstate(sqlstate, "message")
    assert type(error) is kind and error.code == sqlstate
    if kind is SetupError:
        assert error.fix  # type: ignore[attr-defined]


def test_failures_without_a_sqlstate_are_transient_and_timeouts_say_so() -> None:
    """A refused connection and a socket error retry; a watchdog's cut reads as a timeout; a client-side refusal is data."""
    assert classify_pg(psycopg.OperationalError("connection refused")).code == "network"
    assert classify_pg(ConnectionResetError()).code == "network"
    assert classify_pg(psycopg.OperationalError("consuming input failed"), timed_out=True).code == "timeout"
    assert isinstance(classify_pg(UnicodeEncodeError("utf-8", "x", 0, 1, "bad")), DataError)


def test_a_server_error_keeps_its_sqlstate() -> None:
    """psycopg's exception for a check violation becomes a DataError with code 23514."""
    error = classify_pg(psycopg.errors.CheckViolation("new row violates check constraint"))
    assert isinstance(error, DataError) and error.code == "23514"


def test_connection_strings_are_shown_without_their_password() -> None:
    """URI and key=value forms: user, host, port and database only."""
    uri = "postgresql://postgres.abc:s3cr3t-pw@aws-0-eu.pooler.supabase.com:6543/postgres"
    assert describe(uri) == "postgres.abc@aws-0-eu.pooler.supabase.com:6543/postgres"
    kv = "host=db.example user=writer password=s3cr3t-pw port=6543 dbname=logs"
    assert describe(kv) == "writer@db.example:6543/logs" and "s3cr3t" not in describe(kv)
    assert looks_like_db_url(uri) and looks_like_db_url(kv)
    assert not looks_like_db_url("https://abc.supabase.co")


def test_sink_postgres_needs_a_db_url_and_never_shows_its_password() -> None:
    """sink=postgres without SUPABASE_DB_URL names the setting; with it, the spool label and settings hide the password."""
    from supabase_log_handler.config import load_settings
    from supabase_log_handler.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="SUPABASE_DB_URL"):
        load_settings({"sink": "postgres"}, environ={}, env_file="/nonexistent/.env")
    s = load_settings(
        {"sink": "postgres"},
        environ={"SUPABASE_DB_URL": "postgresql://w:s3cr3t-pw@pooler.example:6543/postgres"},
        env_file="/nonexistent/.env",
    )
    assert s.uses_postgres and s.uses_supabase and s.url is None
    assert s.destination.startswith("postgres:w@pooler.example:6543/postgres|public|")
    assert "s3cr3t" not in s.destination and "s3cr3t" not in str(s.public_dict())
