"""The dashboard's reads over the local embedded store (the SQLite file of ``sinks/local.py``).

The file is made ready once by ``LocalSink.prepare`` (tables, the calls table and
its views, created when missing), then read on one ``query_only`` connection per
server thread. ``select`` speaks the same filters as PostgREST (``ilike`` with its
``*`` wildcard included); the aggregates are the migration's SQL functions
written in SQLite's SQL, over the same columns. Times are stored as ISO text in
UTC, so comparing them as text orders them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ..config import Settings
from ..sinks.local import LocalSink, decode_rows
from .store import RUN_CHART_COLUMNS, Filter, Store, StoreError, day_stats, iso

_OPS = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_FIRST_LINE = "substr({c}, 1, instr({c} || char(10), char(10)) - 1)"


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise StoreError(f"not a column name: {name!r}")
    return name


class LocalStore(Store):
    """``Store`` over the local SQLite file."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            runs_table=settings.runs_table,
            logs_table=settings.logs_table,
            calls_table=settings.integration_logs_table,
        )
        self.path = Path(settings.resolved_local_path)
        self.description = f"local store {self.path}"
        sink = LocalSink(
            self.path,
            runs_table=self.runs_table,
            logs_table=self.logs_table,
            integration_logs_table=self.calls_table,
        )
        try:
            sink.prepare()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the local store {self.path}: {exc}") from None
        finally:
            sink.close()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=2.0, check_same_thread=False)
            conn.execute("pragma query_only = on")  # the dashboard never writes
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            cur = self._conn().execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"reading the local store {self.path} failed: {exc}") from None
        return decode_rows(cur)

    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
        columns: str = "*",
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, op, value in filters or []:
            c = _ident(column)
            if op == "in":
                values = list(value)
                where.append(f"{c} in ({', '.join('?' for _ in values)})" if values else "0")
                params.extend(values)
            elif op == "ilike":  # PostgREST's pattern: * is the wildcard, \ escapes
                where.append(f"{c} like ? escape '\\'")
                params.append(str(value).replace("*", "%"))
            elif op == "is":
                where.append(f"{c} is null" if value == "null" else f"{c} is not null")
            else:
                where.append(f"{c} {_OPS[op]} ?")
                params.append(value)
        cols = "*" if columns == "*" else ", ".join(_ident(c) for c in columns.split(","))
        sql = f"select {cols} from {_ident(table)}"
        if where:
            sql += " where " + " and ".join(where)
        if order:
            sql += " order by " + ", ".join(
                f"{_ident(c)} {'desc' if d else 'asc'}" for c, d in order
            )
        if limit is not None:
            sql += f" limit {int(limit)}"
        return self.query(sql, params)

    # -- the aggregates: the migration's functions in SQLite ------------------------------
    def read_filter_values(self) -> dict[str, list[str]]:
        runs = self.runs_table
        scripts = self.query(f"select distinct script_name from {runs} order by 1")
        triggers = self.query(
            f"select distinct triggered_by from (select triggered_by from {runs} "
            "order by started_at desc limit 5000) where triggered_by is not null order by 1"
        )
        return {
            "scripts": [r["script_name"] for r in scripts],
            "triggers": [r["triggered_by"] for r in triggers],
        }

    def errors(self, since: dt.datetime, limit: int) -> list[dict[str, Any]]:
        runs, logs = self.runs_table, self.logs_table
        first_error = _FIRST_LINE.format(c="coalesce(error_message, '')")
        run_message = f"substr({first_error}, 1, 300)"
        log_message = f"substr({_FIRST_LINE.format(c='l.message')}, 1, 300)"
        group = (
            "select '{source}' as source, script_name, message, count(*) as occurrences, "
            "min(at) as first_at, max(at) as last_at, "
            "(select x.run_id from base x where x.script_name = g.script_name "
            "and x.message = g.message order by x.at desc, x.id desc limit 1) as last_run_id "
            "from base g group by script_name, message order by last_at desc, script_name, message "
            "limit ?"
        )
        out = self.query(
            f"with base as (select id, id as run_id, script_name, started_at as at, "
            f"{run_message} as message from {runs} where status = 'error' and started_at >= ?) "
            + group.format(source="run"),
            (iso(since), max(limit, 0)),
        )
        out += self.query(
            f"with base as (select l.id, l.run_id, r.script_name, l.timestamp as at, "
            f"{log_message} as message from {logs} l join {runs} r on r.id = l.run_id "
            "where l.level = 'ERROR' and l.timestamp >= ?) " + group.format(source="log"),
            (iso(since), max(limit, 0)),
        )
        return out

    def run_steps(self, run_id: str) -> list[dict[str, Any]]:
        runs, logs = self.runs_table, self.logs_table
        return self.query(
            f"""
            with ordered as (
              select step, timestamp as ts, level, id,
                     lag(step) over (order by timestamp, id) as prev
                from {logs} where run_id = ?1
            ),
            marked as (
              select step, ts, level,
                     sum(prev is not step) over (order by ts, id rows unbounded preceding)
                       as stretch
                from ordered
            ),
            stretches as (
              select step, stretch, min(ts) as started, count(*) as n,
                     sum(level = 'ERROR') as e, sum(level = 'WARNING') as w
                from marked group by step, stretch
            ),
            run_end as (
              select coalesce(
                (select finished_at from {runs} where id = ?1),
                max(coalesce((select heartbeat_at from {runs} where id = ?1), ''),
                    coalesce((select max(ts) from ordered), ''))) as at
            ),
            timed as (
              select s.*, coalesce(lead(started) over (order by stretch),
                                   max((select at from run_end), started)) as ended
                from stretches s
            )
            select step, min(started) as first_at, max(ended) as ended_at,
                   cast(sum(max(0, round((julianday(ended) - julianday(started)) * 86400000)))
                        as integer) as spent_ms,
                   count(*) as stretches, sum(n) as rows_count, sum(e) as errors,
                   sum(w) as warnings
              from timed group by step order by min(stretch)
            """,
            (run_id,),
        )

    def call_services(self) -> list[str]:
        rows = self.query(f"select distinct service_name from {self.calls_table} order by 1")
        return [r["service_name"] for r in rows]

    def script_days(self, script: str, since_day: dt.date) -> list[dict[str, Any]]:
        since = dt.datetime(since_day.year, since_day.month, since_day.day, tzinfo=dt.timezone.utc)
        runs = self.select(
            self.runs_table,
            filters=[("script_name", "eq", script), ("started_at", "gte", iso(since))],
            columns=RUN_CHART_COLUMNS,
        )
        return day_stats(runs)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
