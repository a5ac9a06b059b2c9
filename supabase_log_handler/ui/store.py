"""What the dashboard reads, behind one class with two backends.

``Store`` holds every query a page makes, written once over a small ``select``
(filters, order, limit, columns: the shape of a PostgREST table read) plus a few
aggregate queries each backend answers its own way: ``store_rest.RestStore``
reads Supabase through PostgREST with the service key (the migration
``20261201120000_dashboard.sql`` provides the aggregates as SQL functions), and
``store_local.LocalStore`` reads the local embedded store (SQLite) with the same
queries in SQLite's SQL. Lists are keyset-paginated on (time, id), so a page
costs the same at the first row and the millionth, and every filter and order
matches an index.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from ..local_integration import stats_views
from ..watch.summary import percentile
from .format import parse_time

UTC = dt.timezone.utc
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
RUN_STATUSES = ("running", "success", "error")
CALL_STATUSES = ("success", "failed", "pending", "retrying")
RUN_LIST_COLUMNS = (
    "id,script_name,status,triggered_by,started_at,finished_at,duration_ms,error_message,"
    "records_fetched,records_inserted,records_updated,records_failed,calls_analyzed,api_cost,"
    "heartbeat_at"
)
RUN_CHART_COLUMNS = (
    "id,started_at,status,duration_ms,records_fetched,records_inserted,records_updated,"
    "records_failed,api_cost"
)
FILTER_VALUES_TTL_S = 30.0  # script names and triggers change rarely
Filter = tuple[str, str, Any]  # (column, op, value); op: eq gt gte lt lte in ilike is


class StoreError(Exception):
    """The backend refused or failed a read; the message says what and, when known, the fix."""


@dataclass(frozen=True)
class Cursor:
    """Where a keyset page ends: the last row's time and id."""

    at: str
    id: str

    def encode(self) -> str:
        return f"{self.at}|{self.id}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        if not text or "|" not in text:
            return None
        at, _, row_id = text.rpartition("|")
        return cls(at, row_id) if at and row_id else None


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next: Cursor | None


@dataclass(frozen=True)
class RunFilter:
    script: str | None = None
    status: str | None = None
    trigger: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str | None = None


@dataclass(frozen=True)
class CallFilter:
    service: str | None = None
    action: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    run_id: str | None = None


def iso(when: dt.datetime) -> str:
    """The form both stores compare correctly: UTC, microseconds, ``+00:00``."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def equal(**columns: str | None) -> list[Filter]:
    """``column = value`` filters for the values that are set."""
    return [(column, "eq", value) for column, value in columns.items() if value]


def contains(text: str) -> str:
    """An ``ilike`` pattern (PostgREST's ``*`` wildcard) matching ``text`` anywhere, literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "*" + escaped.replace("*", "") + "*"


class Store:
    """Every read the pages make; subclasses supply ``select`` and the aggregates."""

    description = ""  # what is being read, for the page footer (never a key)
    has_schedules = False

    def __init__(self, *, runs_table: str, logs_table: str, calls_table: str) -> None:
        self.runs_table = runs_table
        self.logs_table = logs_table
        self.calls_table = calls_table
        self._filter_values: tuple[float, dict[str, list[str]]] | None = None

    # -- what a backend provides ---------------------------------------------------------
    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
        columns: str = "*",
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def read_filter_values(self) -> dict[str, list[str]]:
        """``scripts`` (every name) and ``triggers`` (of recent runs)."""
        raise NotImplementedError

    def errors(self, since: dt.datetime, limit: int) -> list[dict[str, Any]]:
        """Failed runs and ERROR rows since ``since``, grouped (see the migration)."""
        raise NotImplementedError

    def run_steps(self, run_id: str) -> list[dict[str, Any]]:
        """Per step of a run: first_at, ended_at, spent_ms, stretches, rows_count, errors, warnings."""
        raise NotImplementedError

    def call_services(self) -> list[str]:
        """Every service the calls went to."""
        raise NotImplementedError

    def script_days(self, script: str, since_day: dt.date) -> list[dict[str, Any]]:
        """Per UTC day since ``since_day``: runs, successes, failures, success_rate, p50/p95."""
        raise NotImplementedError

    def schedule_state(self, script: str, now: dt.datetime) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        """Release connections."""

    def filter_values(self) -> dict[str, list[str]]:
        """``read_filter_values``, read again at most every ``FILTER_VALUES_TTL_S`` seconds."""
        cached = self._filter_values
        if cached is None or time.monotonic() - cached[0] > FILTER_VALUES_TTL_S:
            cached = (time.monotonic(), self.read_filter_values())
            self._filter_values = cached
        return cached[1]

    # -- keyset pages ----------------------------------------------------------------------
    def keyset(
        self,
        table: str,
        filters: list[Filter],
        *,
        key: str,
        descending: bool,
        after: Cursor | None,
        limit: int,
        columns: str = "*",
    ) -> Page:
        """One page ordered by (key, id); the rows after ``after`` in that order.

        Two reads when a cursor is given, each a plain indexed range: first the
        rows that tie with the cursor's time and come after its id, then the rows
        beyond that time. One more row than asked tells whether a next page exists.
        """
        beyond = "lt" if descending else "gt"
        order = [(key, descending), ("id", descending)]
        want = limit + 1
        if after is None:
            rows = self.select(table, filters=filters, order=order, limit=want, columns=columns)
        else:
            rows = self.select(
                table,
                filters=[*filters, (key, "eq", after.at), ("id", beyond, after.id)],
                order=order,
                limit=want,
                columns=columns,
            )
            if len(rows) < want:
                rows += self.select(
                    table,
                    filters=[*filters, (key, beyond, after.at)],
                    order=order,
                    limit=want - len(rows),
                    columns=columns,
                )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        cursor = Cursor(str(last[key]), str(last["id"])) if more and last is not None else None
        return Page(rows, cursor)

    # -- runs --------------------------------------------------------------------------
    def runs(self, f: RunFilter, *, after: Cursor | None = None, limit: int = 50) -> Page:
        filters = equal(script_name=f.script, status=f.status, triggered_by=f.trigger)
        if f.since:
            filters.append(("started_at", "gte", iso(f.since)))
        if f.until:
            filters.append(("started_at", "lt", iso(f.until)))
        if f.text:
            filters.append(("error_message", "ilike", contains(f.text)))
        return self.keyset(
            self.runs_table,
            filters,
            key="started_at",
            descending=True,
            after=after,
            limit=limit,
            columns=RUN_LIST_COLUMNS,
        )

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.select(self.runs_table, filters=[("id", "eq", run_id)], limit=1)
        return rows[0] if rows else None

    def last_log(self, run_id: str) -> dict[str, Any] | None:
        """The run's newest row (its current step while it runs)."""
        rows = self.select(
            self.logs_table,
            filters=[("run_id", "eq", run_id)],
            order=[("timestamp", True), ("id", True)],
            limit=1,
            columns="step,timestamp,level",
        )
        return rows[0] if rows else None

    def logs(
        self,
        run_id: str,
        *,
        levels: list[str] | None = None,
        text: str | None = None,
        after: Cursor | None = None,
        limit: int = 200,
    ) -> Page:
        """The run's rows in the order they were made, from ``after`` on."""
        filters: list[Filter] = [("run_id", "eq", run_id)]
        if levels:
            filters.append(("level", "in", levels))
        if text:
            filters.append(("message", "ilike", contains(text)))
        return self.keyset(
            self.logs_table, filters, key="timestamp", descending=False, after=after, limit=limit
        )

    def run_calls(self, run_id: str, limit: int = 200) -> list[dict[str, Any]]:
        return self.calls(CallFilter(run_id=run_id), limit=limit, newest_first=False).rows

    # -- scripts -------------------------------------------------------------------------
    def script_runs(self, script: str, limit: int = 200) -> list[dict[str, Any]]:
        """The script's newest runs, oldest first (for per-run charts)."""
        rows = self.select(
            self.runs_table,
            filters=[("script_name", "eq", script)],
            order=[("started_at", True), ("id", True)],
            limit=limit,
            columns=RUN_CHART_COLUMNS,
        )
        return list(reversed(rows))

    # -- calls -------------------------------------------------------------------------
    def calls(
        self,
        f: CallFilter,
        *,
        after: Cursor | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page:
        filters = equal(service_name=f.service, action=f.action, status=f.status, run_id=f.run_id)
        if f.since:
            filters.append(("created_at", "gte", iso(f.since)))
        return self.keyset(
            self.calls_table,
            filters,
            key="created_at",
            descending=newest_first,
            after=after,
            limit=limit,
        )

    def call_stats(
        self, bucket: str, *, service: str | None = None, action: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of the hourly (``bucket="hour"``) or daily (``"day"``) view, oldest bucket first."""
        hourly, daily = stats_views(self.calls_table)
        view = {"hour": hourly, "day": daily}[bucket]
        filters = equal(service_name=service, action=action)
        out: list[dict[str, Any]] = []
        order = [(bucket, False), ("service_name", False), ("action", False), ("status", False)]
        # A view has no id: page by bucket, re-reading a bucket a full page ended in.
        page_rows, lower = 1000, None
        while True:
            bound: list[Filter] = [(bucket, "gte", lower)] if lower is not None else []
            rows = self.select(view, filters=[*filters, *bound], order=order, limit=page_rows)
            if len(rows) < page_rows:
                return out + rows
            last = rows[-1][bucket]
            if lower == last:  # one bucket holds a whole page: keep what was read
                return out + rows
            out += [r for r in rows if r[bucket] != last]
            lower = last


def day_stats(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``run_stats_daily``'s numbers from runs rows (for a store without the view)."""
    by_day: dict[dt.date, list[dict[str, Any]]] = {}
    for r in runs:
        started = parse_time(r.get("started_at"))
        if started is not None:
            by_day.setdefault(started.astimezone(UTC).date(), []).append(r)
    out = []
    for day in sorted(by_day):
        rows = by_day[day]
        ok = sum(r.get("status") == "success" for r in rows)
        failed = sum(r.get("status") == "error" for r in rows)
        finished = ok + failed
        durations = sorted(
            float(r["duration_ms"]) for r in rows if r.get("duration_ms") is not None
        )
        out.append(
            {
                "day": day.isoformat(),
                "runs": len(rows),
                "successes": ok,
                "failures": failed,
                "success_rate": round(100.0 * ok / finished, 1) if finished else None,
                "p50_duration_ms": percentile(durations, 0.5),
                "p95_duration_ms": percentile(durations, 0.95),
            }
        )
    return out
