"""The dashboard's reads over a Supabase project, through PostgREST with the service key.

Plain reads are ``SupabaseSink.select`` (the same requests the official client
sends); the aggregates are the SQL functions of the migration
``20261201120000_dashboard.sql`` (``dashboard_errors``, ``dashboard_run_steps``,
``dashboard_filter_values``, ``dashboard_call_filter_values``) called with
``SupabaseSink.rpc``, and the script charts read the ``run_stats_daily`` view.
The key lives in the sinks, in this process only. The server answers requests
on several threads, and a sink is used by one thread at a time, so each thread
gets its own sink (and HTTP connection pool).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from ..config import Settings
from ..errors import DeliveryError
from ..sinks.factory import make_sink
from ..sinks.rest import SupabaseSink
from .store import RUN_LIST_COLUMNS, Filter, Store, StoreError, iso

MIGRATE = "run `supabase-log migrate` (it adds the dashboard's indexes and SQL functions)"
MISSING = ("PGRST202", "42883", "PGRST205", "42P01")


def describe_error(exc: DeliveryError, what: str) -> StoreError:
    """A DeliveryError as a StoreError whose message names the fix."""
    fix = getattr(exc, "fix", None)
    if exc.code in MISSING:
        fix = MIGRATE
    text = f"reading {what} failed: {exc}"
    return StoreError(text + (f" (fix: {fix})" if fix else ""))


class RestStore(Store):
    """``Store`` over PostgREST (Supabase, or anything that speaks its protocol)."""

    has_schedules = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            runs_table=settings.runs_table,
            logs_table=settings.logs_table,
            calls_table=settings.integration_logs_table,
        )
        self._settings = settings
        self._local = threading.local()
        self._sinks: list[SupabaseSink] = []
        self._lock = threading.Lock()
        self.description = f"Supabase project {(settings.url or '').rstrip('/')}"

    def _sink(self) -> SupabaseSink:
        sink: SupabaseSink | None = getattr(self._local, "sink", None)
        if sink is None:
            made = make_sink(self._settings)
            assert isinstance(made, SupabaseSink)
            sink = made
            self._local.sink = sink
            with self._lock:
                self._sinks.append(sink)
        return sink

    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
        columns: str = "*",
    ) -> list[dict[str, Any]]:
        try:
            return self._sink().select(
                table, filters=filters, order=order, limit=limit, columns=columns
            )
        except DeliveryError as exc:
            raise describe_error(exc, table) from None

    def rpc(self, function: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return self._sink().rpc(function, params or {})
        except DeliveryError as exc:
            raise describe_error(exc, f"{function}()") from None

    def read_filter_values(self) -> dict[str, list[str]]:
        found = self.rpc("dashboard_filter_values") or {}
        return {"scripts": found.get("scripts") or [], "triggers": found.get("triggers") or []}

    def errors(self, since: dt.datetime, limit: int) -> list[dict[str, Any]]:
        return list(self.rpc("dashboard_errors", {"p_since": iso(since), "p_limit": limit}) or [])

    def run_steps(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.rpc("dashboard_run_steps", {"p_run_id": run_id}) or [])

    def call_services(self) -> list[str]:
        found = self.rpc("dashboard_call_filter_values") or {}
        return list(found.get("services") or [])

    def script_days(self, script: str, since_day: dt.date) -> list[dict[str, Any]]:
        return self.select(
            "run_stats_daily",
            filters=[("script_name", "eq", script), ("day", "gte", since_day.isoformat())],
            order=[("day", False)],
            columns="day,runs,successes,failures,running,success_rate,p50_duration_ms,"
            "p95_duration_ms,max_duration_ms,api_cost",
        )

    def schedule_state(self, script: str, now: dt.datetime) -> dict[str, Any] | None:
        """The job's schedule, its state at ``now`` by ``check``'s rules, and its open incidents."""
        from ..watch.evaluate import evaluate_schedule, window_start
        from ..watch.schedules import Schedule

        found = self.select("job_schedules", filters=[("script_name", "eq", script)], limit=1)
        if not found:
            return None
        schedule = Schedule.from_row(found[0])
        incidents = self.select(
            "job_incidents",
            filters=[("script_name", "eq", script), ("resolved_at", "is", "null")],
            order=[("opened_at", True)],
            limit=20,
        )
        state: dict[str, Any] = {"schedule": schedule, "incidents": incidents, "error": None}
        try:
            since = window_start(schedule, now)
            runs = self.select(
                self.runs_table,
                filters=[("script_name", "eq", script), ("started_at", "gte", iso(since))],
                order=[("started_at", True)],
                limit=1000,
                columns=RUN_LIST_COLUMNS,
            )
            runs += self.select(
                self.runs_table,
                filters=[
                    ("script_name", "eq", script),
                    ("status", "eq", "running"),
                    ("started_at", "lt", iso(since)),
                ],
                limit=100,
                columns=RUN_LIST_COLUMNS,
            )
            state["job"] = evaluate_schedule(schedule, runs, now)
        except ImportError as exc:  # cron schedules need cronsim (the ui and watch extras)
            state["error"] = f"cannot evaluate the cron schedule: {exc}"
        return state

    def close(self) -> None:
        with self._lock:
            sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.close()
