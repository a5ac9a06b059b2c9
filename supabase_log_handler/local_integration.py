"""The ``integration_logs`` table and its statistics views in the local embedded store (SQLite).

Owns the SQLite form of what ``migrations/20261201100000_create_integration_logs.sql``
creates in PostgreSQL: the same fifteen columns (uuids, JSON payloads and times stored as
text), the status check, the indexes, ``updated_at`` kept by a trigger, the rule that a
call's state only moves forward (a trigger, as in PostgreSQL), and the views
``integration_stats_hourly`` (the current UTC hour and the 23 before it) and
``integration_stats_daily`` (today, UTC, and the 29 days before) with PostgreSQL's columns
and with buckets written the way PostgREST returns them (``2026-12-01T10:00:00+00:00``).
``ensure_schema`` is idempotent; the local sink calls it on the connection it writes with,
and the ``calls`` command reads what it creates. Like the local ``runs``/``logs`` tables,
the table has a ``pushed`` flag for ``supabase-log push``, which reads leave out.
"""

from __future__ import annotations

import sqlite3

TABLE = "integration_logs"
HOURLY_VIEW = "integration_stats_hourly"
DAILY_VIEW = "integration_stats_daily"
STATUSES = ("success", "failed", "pending", "retrying")
CALL_COLUMNS = (
    "id",
    "service_name",
    "action",
    "status",
    "related_entity_type",
    "related_entity_id",
    "request_payload",
    "response_payload",
    "error_message",
    "error_code",
    "duration_ms",
    "retry_count",
    "created_at",
    "updated_at",
    "run_id",
)
JSON_COLUMNS = ("request_payload", "response_payload")

# The time a row changes, in the same form as the times the writers store.
_NOW = "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"

_TABLE_DDL = """
create table if not exists {table} (
  id text primary key,
  service_name text not null,
  action text not null,
  status text not null check (status in ('success', 'failed', 'pending', 'retrying')),
  related_entity_type text,
  related_entity_id text,
  request_payload text,
  response_payload text,
  error_message text,
  error_code text,
  duration_ms integer,
  retry_count integer default 0,
  created_at text default ({now}),
  updated_at text default ({now}),
  run_id text references {runs} (id) on delete set null,
  pushed integer not null default 0
);
create index if not exists idx_{table}_service_name on {table} (service_name);
create index if not exists idx_{table}_status on {table} (status);
create index if not exists idx_{table}_created_at on {table} (created_at desc);
create index if not exists idx_{table}_related_entity on {table} (related_entity_type, related_entity_id);
create index if not exists idx_{table}_failed on {table} (service_name, created_at desc) where status = 'failed';
create index if not exists idx_{table}_dashboard on {table} (service_name, status, created_at desc);
create index if not exists idx_{table}_run_id on {table} (run_id);
"""

# Triggers are compared with what sqlite_master holds and replaced when a store made by an
# older version has another text (as the views are).
_TRIGGERS = (
    # A call only moves forward (as the PostgreSQL trigger integration_logs_state_order
    # rules): an update that would make a finished call pending or retrying again, a
    # retrying one pending, or lower retry_count is skipped, and the stored row stays.
    (
        "{table}_state_order",
        """CREATE TRIGGER {table}_state_order BEFORE UPDATE ON {table}
FOR EACH ROW WHEN (old.status IN ('success', 'failed') AND new.status IN ('pending', 'retrying'))
  OR (old.status = 'retrying' AND new.status = 'pending')
  OR coalesce(new.retry_count, 0) < coalesce(old.retry_count, 0)
BEGIN
  SELECT raise(IGNORE);
END""",
    ),
    # SQLite cannot change NEW in a trigger, so the row is touched after the update. A
    # change of the call refreshes updated_at and marks the row for `push` again (its new
    # state must reach Supabase too); marking it uploaded (only `pushed` changes) does not.
    (
        "{table}_set_updated_at",
        """CREATE TRIGGER {table}_set_updated_at AFTER UPDATE ON {table}
FOR EACH ROW WHEN """
        + " OR ".join(f"old.{c} IS NOT new.{c}" for c in CALL_COLUMNS if c != "updated_at")
        + """
BEGIN
  UPDATE {table} SET updated_at = {now}, pushed = 0 WHERE id = new.id;
END""",
    ),
)

# Stored verbatim in sqlite_master, which is how ensure_schema sees that a view is current.
_HOURLY_SQL = """CREATE VIEW {view} AS
SELECT
  service_name,
  action,
  status,
  strftime('%Y-%m-%dT%H:00:00+00:00', created_at) AS hour,
  count(*) AS count,
  cast(round(avg(duration_ms)) AS integer) AS avg_duration_ms,
  max(duration_ms) AS max_duration_ms,
  sum(status = 'failed') AS failed_count
FROM {table}
WHERE datetime(created_at) >= strftime('%Y-%m-%d %H:00:00', 'now', '-23 hours')
GROUP BY service_name, action, status, hour"""

_DAILY_SQL = """CREATE VIEW {view} AS
SELECT
  service_name,
  action,
  status,
  strftime('%Y-%m-%dT00:00:00+00:00', created_at) AS day,
  count(*) AS count,
  cast(round(avg(duration_ms)) AS integer) AS avg_duration_ms,
  sum(status = 'failed') AS failed_count
FROM {table}
WHERE datetime(created_at) >= datetime('now', 'start of day', '-29 days')
GROUP BY service_name, action, status, day"""


def stats_views(table: str = TABLE) -> tuple[str, str]:
    """Names of the (hourly, daily) views over ``table``: PostgreSQL's names for the default table."""
    _check_identifier(table)
    if table == TABLE:
        return HOURLY_VIEW, DAILY_VIEW
    return f"{table}_stats_hourly", f"{table}_stats_daily"


def ensure_schema(
    conn: sqlite3.Connection, table: str = TABLE, *, runs_table: str = "runs"
) -> None:
    """Create ``table``, its indexes, trigger and views if missing; replace views of an older shape.

    ``run_id`` references ``runs_table``: with ``pragma foreign_keys=on`` that table must
    exist before rows are written (the local sink creates it first).
    """
    _check_identifier(table)
    _check_identifier(runs_table)
    conn.executescript(_TABLE_DDL.format(table=table, runs=runs_table, now=_NOW))
    for name, template in _TRIGGERS:
        _replace_if_changed(conn, "trigger", name.format(table=table),
                            template.format(table=table, now=_NOW))  # fmt: skip
    hourly, daily = stats_views(table)
    for view, template in ((hourly, _HOURLY_SQL), (daily, _DAILY_SQL)):
        _replace_if_changed(conn, "view", view, template.format(view=view, table=table))


def _replace_if_changed(conn: sqlite3.Connection, kind: str, name: str, wanted: str) -> None:
    """Create the view or trigger ``name`` as ``wanted``, replacing one with another text."""
    found = conn.execute(
        "select sql from sqlite_master where type = ? and name = ?", (kind, name)
    ).fetchone()
    if found is None or found[0] != wanted:
        conn.executescript(f"drop {kind} if exists {name};\n{wanted};")


def _check_identifier(name: str) -> None:
    if not name or not name.replace("_", "").isalnum() or name[0].isdigit():
        raise ValueError(f"not a table name: {name!r}")
