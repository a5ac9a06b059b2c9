"""The local embedded store: the same ``runs`` and ``logs`` tables in a SQLite file.

It is where rows go when no Supabase URL is configured, so a job runs and is
recorded on a laptop with nothing set up; the terminal views read it the same
way as Supabase, and ``supabase-log push`` uploads it later (ids make that
idempotent). JSON columns are stored as text and parsed back on read.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._files import create_private_file, make_private_dir
from ..errors import DataError, TransientError
from . import DictRows, Filter

RUN_COLUMNS = (
    "id",
    "batch_id",
    "script_name",
    "triggered_by",
    "started_at",
    "finished_at",
    "duration_ms",
    "status",
    "error_message",
    "records_fetched",
    "records_inserted",
    "records_updated",
    "records_failed",
    "sync_mode",
    "sync_start_date",
    "sync_end_date",
    "calls_analyzed",
    "api_cost",
    "metadata",
)
LOG_COLUMNS = ("id", "run_id", "timestamp", "level", "step", "message", "meta")
JSON_COLUMNS = {"meta", "metadata", "request_payload", "response_payload"}
_DDL = """
create table if not exists {runs} (
  id text primary key,
  batch_id text,
  script_name text not null,
  triggered_by text default 'manual',
  started_at text,
  finished_at text,
  duration_ms integer,
  status text not null check (status in ('running', 'success', 'error')),
  error_message text,
  records_fetched integer,
  records_inserted integer,
  records_updated integer,
  records_failed integer,
  sync_mode text,
  sync_start_date text,
  sync_end_date text,
  calls_analyzed integer,
  api_cost real,
  metadata text default '{{}}',
  pushed integer not null default 0
);
create table if not exists {logs} (
  id text primary key,
  run_id text not null references {runs} (id) on delete cascade,
  timestamp text not null,
  level text not null check (level in ('INFO', 'ERROR', 'WARNING', 'DEBUG')),
  step text not null,
  message text not null,
  meta text default '{{}}',
  pushed integer not null default 0
);
create index if not exists {runs}_started_at on {runs} (started_at desc);
create index if not exists {logs}_run_id on {logs} (run_id, timestamp);
create index if not exists {logs}_timestamp on {logs} (timestamp desc);
"""
_OPS = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class LocalSink(DictRows):
    """SQLite store with the Supabase tables' shape; one connection per thread."""

    name = "local"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        runs_table: str = "runs",
        logs_table: str = "logs",
        integration_logs_table: str = "integration_logs",
    ) -> None:
        self.path = Path(path)
        self.runs_table = runs_table
        self.logs_table = logs_table
        self.integration_logs_table = integration_logs_table
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            make_private_dir(self.path.parent)
            create_private_file(self.path)  # sqlite gives -wal and -shm the same mode
            conn = sqlite3.connect(str(self.path), timeout=2.0, isolation_level=None)
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            conn.execute(
                "pragma foreign_keys=on"
            )  # as in Supabase: deleting a run deletes its logs
            conn.executescript(_DDL.format(runs=self.runs_table, logs=self.logs_table))
            have = {r[1] for r in conn.execute(f"pragma table_info({self.runs_table})")}
            if "heartbeat_at" not in have:  # stores made before heartbeats
                conn.execute(f"alter table {self.runs_table} add column heartbeat_at text")
            from ..local_integration import ensure_schema

            ensure_schema(conn, self.integration_logs_table, runs_table=self.runs_table)
            self._local.conn = conn
        return conn

    def prepare(self) -> None:
        self._conn()

    def _write(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        conn = self._conn()
        try:
            conn.execute("begin immediate")
            conn.executemany(sql, params)
            conn.execute("commit")
        except sqlite3.IntegrityError as exc:
            conn.execute("rollback")
            code = "23503" if "FOREIGN KEY" in str(exc) else "sqlite-constraint"  # as PostgreSQL says
            raise DataError(str(exc), code=code) from exc
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("rollback")
            raise TransientError(str(exc), code="sqlite-busy") from exc

    def write(
        self,
        table: str,
        rows: Sequence[bytes],
        *,
        merge: bool,
        columns: Sequence[str],
        timeout_s: float | None = None,
    ) -> None:
        """Insert rows (ids already stored are kept, or merged with ``merge``)."""
        if not rows:
            return
        for c in columns:
            _check_identifier(c)
        cols = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        if merge:
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
            pushed = ", pushed = 0" if table in (self.runs_table, self.logs_table) else ""
            sql = f"insert into {table} ({cols}) values ({marks}) on conflict (id) do update set {updates}{pushed}"
        else:
            sql = f"insert or ignore into {table} ({cols}) values ({marks})"
        params = []
        for raw in rows:
            row = json.loads(raw)
            params.append(tuple(_column_value(row.get(c)) for c in columns))
        self._write(sql, params)

    def update(
        self,
        table: str,
        row_id: str,
        values: bytes,
        *,
        only_if: tuple[str, str],
        timeout_s: float | None = None,
    ) -> None:
        """Set ``values`` on row ``row_id`` while its ``only_if`` column has that value."""
        row = {k: v for k, v in json.loads(values).items() if k != "id"}
        if not row:
            return
        column, value = only_if
        for c in (*row, column):
            _check_identifier(c)
        sets = ", ".join(f"{c} = ?" for c in row)
        self._write(
            f"update {table} set {sets} where id = ? and {column} = ?",
            [(*(_column_value(v) for v in row.values()), row_id, value)],
        )

    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        where, params = [], []
        for column, op, value in filters or []:
            _check_identifier(column)
            if op == "not_null":
                where.append(f"{column} is not null")
                continue
            if op == "in":
                values = list(value)
                where.append(f"{column} in ({', '.join('?' for _ in values)})" if values else "0")
                params.extend(values)
            else:
                where.append(f"{column} {_OPS[op]} ?")
                params.append(value)
        sql = f"select * from {table}"
        if where:
            sql += " where " + " and ".join(where)
        if order:
            for column, _ in order:
                _check_identifier(column)
            sql += " order by " + ", ".join(f"{c} {'desc' if d else 'asc'}" for c, d in order)
        if limit is not None:
            sql += f" limit {int(limit)}"
        return decode_rows(self._conn().execute(sql, params))

    # -- push support ------------------------------------------------------------------
    def unpushed(self, table: str, limit: int) -> list[dict[str, Any]]:
        """Rows not yet uploaded, oldest first."""
        key = {self.runs_table: "started_at", self.logs_table: "timestamp"}.get(table, "created_at")
        return decode_rows(self._conn().execute(
            f"select * from {table} where pushed = 0 order by {key}, id limit ?", (limit,)
        ))  # fmt: skip

    def mark_pushed(self, table: str, ids: list[str]) -> None:
        self._conn().executemany(f"update {table} set pushed = 1 where id = ?", [(i,) for i in ids])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _column_value(value: Any) -> Any:
    """JSON values (meta, metadata, payloads) are stored as text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _check_identifier(name: str) -> None:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a column name: {name!r}")


def decode_rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    """A cursor's rows as dicts the way Supabase returns them: JSON columns parsed (text that
    is not JSON stays as stored), the local ``pushed`` mark left out."""
    names = [d[0] for d in cur.description]
    out = []
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=False))
        row.pop("pushed", None)
        for c in JSON_COLUMNS & row.keys():
            if isinstance(row[c], str):
                with contextlib.suppress(ValueError):
                    row[c] = json.loads(row[c])
        out.append(row)
    return out
