"""The local store's `integration_logs`: schema, check, trigger, run link, views kept current."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from supabase_log_handler.local_integration import (
    CALL_COLUMNS,
    DAILY_VIEW,
    HOURLY_VIEW,
    ensure_schema,
    stats_views,
)
from supabase_log_handler.sinks.local import LocalSink


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A local store file with runs/logs (made by the local sink) and the calls table."""
    path = tmp_path / "local.sqlite3"
    LocalSink(path).prepare()
    connection = sqlite3.connect(str(path), isolation_level=None)
    connection.execute("pragma foreign_keys = on")
    ensure_schema(connection)
    yield connection
    connection.close()


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return conn.execute("select type, name, sql from sqlite_master order by type, name").fetchall()


def test_schema_is_made_once_with_postgres_columns_and_view_names(
    conn: sqlite3.Connection,
) -> None:
    """ensure_schema twice changes nothing; the table has PostgreSQL's 15 columns plus the push flag; views are named as there."""
    before = _schema(conn)
    ensure_schema(conn)
    assert _schema(conn) == before
    columns = [r[1] for r in conn.execute("pragma table_info(integration_logs)")]
    assert columns == [*CALL_COLUMNS, "pushed"]
    views = {name for kind, name, _ in before if kind == "view"}
    assert views == {HOURLY_VIEW, DAILY_VIEW} == set(stats_views())
    assert (
        len(
            [
                n
                for kind, n, _ in before
                if kind == "index" and n.startswith("idx_integration_logs_")
            ]
        )
        == 7
    )
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute(
            "insert into integration_logs (id, service_name, action, status) values ('x', 's', 'a', 'done')"
        )


def test_updated_at_follows_changes_but_not_the_push_flag(conn: sqlite3.Connection) -> None:
    """An update of a call refreshes updated_at; marking it uploaded does not."""
    old = "2001-01-01T00:00:00.000000+00:00"
    conn.execute(
        "insert into integration_logs (id, service_name, action, status, created_at, updated_at)"
        " values ('c1', 'amocrm', 'sync_lead', 'pending', ?, ?)",
        (old, old),
    )
    conn.execute("update integration_logs set pushed = 1 where id = 'c1'")
    assert conn.execute("select updated_at from integration_logs").fetchone() == (old,)
    conn.execute("update integration_logs set status = 'success', pushed = 0 where id = 'c1'")
    updated, created = conn.execute(
        "select updated_at, created_at from integration_logs"
    ).fetchone()
    assert created == old and updated > old and updated.endswith("+00:00")
    assert conn.execute("select retry_count from integration_logs").fetchone() == (0,)


def test_deleting_a_run_unlinks_its_calls(conn: sqlite3.Connection) -> None:
    """run_id references runs: deleting the run keeps its calls with run_id NULL, as in PostgreSQL."""
    conn.execute("insert into runs (id, script_name, status) values ('r1', 'crm-sync', 'success')")
    conn.execute(
        "insert into integration_logs (id, service_name, action, status, run_id)"
        " values ('c1', 'amocrm', 'sync_lead', 'success', 'r1')"
    )
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        conn.execute(
            "insert into integration_logs (id, service_name, action, status, run_id)"
            " values ('c2', 'amocrm', 'sync_lead', 'success', 'no-such-run')"
        )
    conn.execute("delete from runs where id = 'r1'")
    assert conn.execute("select id, run_id from integration_logs").fetchall() == [("c1", None)]


def test_views_of_another_shape_are_replaced(conn: sqlite3.Connection) -> None:
    """A view left by another version is replaced with the current one; a current one is left alone."""
    conn.executescript(f"drop view {HOURLY_VIEW}; create view {HOURLY_VIEW} as select 1 as hour;")
    ensure_schema(conn)
    columns = [d[0] for d in conn.execute(f"select * from {HOURLY_VIEW}").description]
    assert columns == [
        "service_name",
        "action",
        "status",
        "hour",
        "count",
        "avg_duration_ms",
        "max_duration_ms",
        "failed_count",
    ]


def test_other_table_names_get_their_own_views(tmp_path: Path) -> None:
    """A table under another name gets views named after it; names that are not identifiers are refused."""
    conn = sqlite3.connect(str(tmp_path / "other.sqlite3"), isolation_level=None)
    try:
        ensure_schema(conn, "api_calls")
        assert stats_views("api_calls") == ("api_calls_stats_hourly", "api_calls_stats_daily")
        conn.execute(
            "insert into api_calls (id, service_name, action, status, duration_ms)"
            " values ('c1', 'resend', 'send_email', 'failed', 89)"
        )
        assert conn.execute(
            "select service_name, count, avg_duration_ms, failed_count from api_calls_stats_daily"
        ).fetchall() == [("resend", 1, 89, 1)]
        for bad in ("calls; drop table runs", "", "1calls"):
            with pytest.raises(ValueError, match="not a table name"):
                ensure_schema(conn, bad)
    finally:
        conn.close()


def test_a_call_changed_after_push_is_pushed_again_and_never_moves_back(
    conn: sqlite3.Connection,
) -> None:
    """A store made by an older version gets the current triggers: a call that changes after
    upload is marked for push again, and a late older state is skipped."""
    conn.executescript(  # the trigger as an earlier version wrote it, without the order rule
        "drop trigger integration_logs_state_order; drop trigger integration_logs_set_updated_at;"
        " create trigger integration_logs_set_updated_at after update on integration_logs"
        " for each row when not (old.pushed = 0 and new.pushed = 1)"
        " begin update integration_logs set updated_at = 'x' where id = new.id; end;"
    )
    ensure_schema(conn)
    upsert = (
        "insert into integration_logs (id, service_name, action, status, retry_count)"
        " values ('c1', 'mobizon', 'send_sms', ?, ?) on conflict (id) do update"
        " set status = excluded.status, retry_count = excluded.retry_count"
    )
    conn.execute(upsert, ("retrying", 1))
    conn.execute("update integration_logs set pushed = 1 where id = 'c1'")
    assert conn.execute("select pushed from integration_logs").fetchone() == (1,)
    conn.execute(upsert, ("success", 1))
    assert conn.execute("select status, pushed from integration_logs").fetchone() == ("success", 0)
    conn.execute("update integration_logs set pushed = 1 where id = 'c1'")
    for late in (("retrying", 1), ("pending", 0), ("success", 0)):
        conn.execute(upsert, late)
    assert conn.execute("select status, retry_count, pushed from integration_logs").fetchone() == (
        "success",
        1,
        1,
    )
