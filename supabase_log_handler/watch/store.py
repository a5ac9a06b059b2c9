"""The watch tables and SQL functions, reached through PostgREST with the service key.

Owns every request the watch commands make: schedules (``job_schedules``,
``declare_job_schedule``), the runs and ERROR rows a check reads, the reaper
(``reap_stale_runs``), incident claims (``claim_job_incident``,
``resolve_job_incidents``) and retention (``prune_logs``, ``prune_runs``). One
``supabase`` client per ``WatchDb``, created on first use; every failure is
mapped to the project's DeliveryError kinds by ``sinks.classify.classify``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from ..config import Settings, load_settings
from ..errors import ConfigurationError
from .schedules import Schedule, iso_utc

NEEDS_SUPABASE = (
    "schedules, check, digest and incidents live in Supabase: set SUPABASE_URL and "
    "SUPABASE_SERVICE_ROLE_KEY (the local store keeps runs and logs only)"
)
RUN_COLUMNS = (
    "id,script_name,status,started_at,finished_at,duration_ms,error_message,triggered_by,"
    "records_fetched,records_inserted,records_updated,records_failed,calls_analyzed,api_cost"
)
PAGE_ROWS = 1000


class WatchDb:
    """Watch queries on one Supabase project; use from one thread, ``close()`` when done."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        schema: str = "public",
        runs_table: str = "runs",
        logs_table: str = "logs",
        request_timeout_s: float = 15.0,
    ) -> None:
        self._url = url
        self._key = key
        self._schema = schema
        self.runs_table = runs_table
        self.logs_table = logs_table
        self._timeout_s = request_timeout_s
        self._client: Any = None
        self._http: Any = None
        self._status: int | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, env_file: str | None = None, **overrides: Any
    ) -> WatchDb:
        s = settings or load_settings(overrides, env_file=env_file)
        if not s.uses_supabase or not s.url or not s.key:
            raise ConfigurationError(NEEDS_SUPABASE)
        return cls(
            s.url,
            s.key,
            schema=s.schema,
            runs_table=s.runs_table,
            logs_table=s.logs_table,
            request_timeout_s=max(s.request_timeout_s, 15.0),
        )

    # -- the one helper every request goes through -------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            import httpx
            from supabase import create_client
            from supabase.lib.client_options import SyncClientOptions

            def remember(response: httpx.Response) -> None:
                self._status = response.status_code

            self._http = httpx.Client(
                timeout=httpx.Timeout(self._timeout_s, connect=min(self._timeout_s, 5.0)),
                event_hooks={"response": [remember]},
            )
            options = SyncClientOptions(
                schema=self._schema,
                httpx_client=self._http,
                postgrest_client_retry=False,
                auto_refresh_token=False,
                persist_session=False,
            )
            self._client = create_client(self._url, self._key, options)
        return self._client

    def _run(self, build: Any) -> Any:
        from ..sinks.classify import classify

        self._status = None
        try:
            return build(self._get_client()).execute().data
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise classify(exc, self._status) from exc

    def rpc(self, function: str, args: dict[str, Any]) -> Any:
        """Call an SQL function (``POST /rest/v1/rpc/<function>``); its result."""
        return self._run(lambda c: c.rpc(function, args))

    def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            with contextlib.suppress(Exception):
                http.close()

    # -- schedules -----------------------------------------------------------------------
    def declare_schedule(self, schedule: Schedule) -> str:
        return str(self.rpc("declare_job_schedule", schedule.rpc_args()))

    def schedules(self) -> list[Schedule]:
        rows = self._run(lambda c: c.table("job_schedules").select("*").order("script_name"))
        return [Schedule.from_row(r) for r in rows or []]

    def remove_schedule(self, script_name: str) -> bool:
        rows = self._run(lambda c: c.table("job_schedules").delete().eq("script_name", script_name))
        return bool(rows)

    # -- runs and logs -------------------------------------------------------------------
    def runs_started(
        self, script_name: str | None, since: dt.datetime, until: dt.datetime
    ) -> list[dict[str, Any]]:
        """Runs (of one script, or all) started in [since, until], oldest first (at most 20 pages)."""
        out: list[dict[str, Any]] = []
        for page_no in range(20):

            def build(c: Any, first: int = page_no * PAGE_ROWS) -> Any:
                q = c.table(self.runs_table).select(RUN_COLUMNS)
                if script_name is not None:
                    q = q.eq("script_name", script_name)
                q = q.gte("started_at", iso_utc(since)).lte("started_at", iso_utc(until))
                return q.order("started_at").order("id").range(first, first + PAGE_ROWS - 1)

            page = self._run(build) or []
            out.extend(page)
            if len(page) < PAGE_ROWS:
                break
        return out

    def runs_by_id(self, run_ids: list[str]) -> list[dict[str, Any]]:
        if not run_ids:
            return []
        rows = self._run(
            lambda c: c.table(self.runs_table).select(RUN_COLUMNS).in_("id", run_ids[:PAGE_ROWS])
        )
        return list(rows or [])

    def running_since_before(self, script_name: str, before: dt.datetime) -> list[dict[str, Any]]:
        """Runs of ``script_name`` still ``running`` that started before ``before``."""
        rows = self._run(
            lambda c: (
                c.table(self.runs_table)
                .select(RUN_COLUMNS)
                .eq("script_name", script_name)
                .eq("status", "running")
                .lt("started_at", iso_utc(before))
                .order("started_at")
                .limit(100)
            )
        )
        return list(rows or [])

    def lost_runs(self, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
        """Runs closed by the reaper (``lost: ...``) that finished in [since, until]."""
        rows = self._run(
            lambda c: (
                c.table(self.runs_table)
                .select(RUN_COLUMNS)
                .eq("status", "error")
                .like("error_message", "lost: %")
                .gte("finished_at", iso_utc(since))
                .lte("finished_at", iso_utc(until))
                .order("finished_at")
                .limit(PAGE_ROWS)
            )
        )
        return list(rows or [])

    def last_good_runs(self, script_names: list[str], until: dt.datetime) -> list[dict[str, Any]]:
        """Successful runs of these scripts started before ``until``, newest first (a page)."""
        if not script_names:
            return []
        rows = self._run(
            lambda c: (
                c.table(self.runs_table)
                .select(RUN_COLUMNS)
                .in_("script_name", script_names)
                .eq("status", "success")
                .lte("started_at", iso_utc(until))
                .order("started_at", desc=True)
                .limit(PAGE_ROWS)
            )
        )
        return list(rows or [])

    def error_rows(self, run_id: str, limit: int = 5) -> list[dict[str, Any]]:
        """The run's last ``limit`` ERROR rows, oldest first."""
        rows = self._run(
            lambda c: (
                c.table(self.logs_table)
                .select("timestamp,step,message")
                .eq("run_id", run_id)
                .eq("level", "ERROR")
                .order("timestamp", desc=True)
                .limit(limit)
            )
        )
        return list(reversed(rows or []))

    # -- stale runs and incidents --------------------------------------------------------
    def reap(
        self, *, multiple: float, default_interval_s: float, as_of: dt.datetime
    ) -> list[dict[str, Any]]:
        rows = self.rpc(
            "reap_stale_runs",
            {
                "multiple": multiple,
                "default_interval_s": default_interval_s,
                "as_of": iso_utc(as_of),
            },
        )
        return list(rows or [])

    def claim(
        self,
        *,
        script_name: str,
        kind: str,
        period: str,
        event_at: dt.datetime,
        run_id: str | None,
        detail: dict[str, Any],
        now: dt.datetime,
        realert_s: float | None,
    ) -> dict[str, Any] | None:
        """The incident row when this caller must send the alert, else None."""
        rows = self.rpc(
            "claim_job_incident",
            {
                "p_script_name": script_name,
                "p_kind": kind,
                "p_period": period,
                "p_event_at": iso_utc(event_at),
                "p_run_id": run_id,
                "p_detail": detail,
                "p_now": iso_utc(now),
                "p_realert_s": realert_s,
            },
        )
        return rows[0] if rows else None

    def resolve(
        self, script_name: str, before: dt.datetime, except_run: str | None, now: dt.datetime
    ) -> list[dict[str, Any]]:
        rows = self.rpc(
            "resolve_job_incidents",
            {
                "p_script_name": script_name,
                "p_before": iso_utc(before),
                "p_except_run": except_run,
                "p_now": iso_utc(now),
            },
        )
        return list(rows or [])

    def open_incidents(self) -> list[dict[str, Any]]:
        rows = self._run(
            lambda c: (
                c.table("job_incidents")
                .select("*")
                .is_("resolved_at", "null")
                .order("opened_at")
                .limit(PAGE_ROWS)
            )
        )
        return list(rows or [])

    def mark_incident(self, incident_id: str, column: str, when: dt.datetime) -> None:
        """Set ``sent_at`` or ``recovery_sent_at`` of an incident (first time only)."""
        assert column in ("sent_at", "recovery_sent_at")
        self._run(
            lambda c: (
                c.table("job_incidents")
                .update({column: iso_utc(when)})
                .eq("id", incident_id)
                .is_(column, "null")
            )
        )

    # -- retention -----------------------------------------------------------------------
    def prune_batch(self, function: str, args: dict[str, Any]) -> int:
        return int(self.rpc(function, args) or 0)
