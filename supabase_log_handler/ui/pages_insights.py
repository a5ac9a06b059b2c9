"""The Errors, Script and Integrations pages.

- ``/errors?window=24h|7d``: failed runs and ERROR rows of the window, grouped by
  script and first message line, each group linking to its newest run.
- ``/scripts/{name}``: success rate and p50/p95 duration per day (30 days),
  records and API cost per run (the newest 200), the schedule's state by
  ``supabase-log check``'s rules and its open incidents when a schedule exists,
  and the newest runs.
- ``/integrations?bucket=hour|day``: the hourly or daily statistics views as
  charts (calls, failures, average and maximum duration per service and action)
  and the calls, filtered and a keyset page at a time (``/integrations/calls``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .charts import call_charts, script_charts
from .store import CALL_STATUSES, CallFilter, Cursor, RunFilter
from .web import Web, fragment, parallel, param, url

UTC = dt.timezone.utc
WINDOWS = (("24h", "Last 24 hours"), ("7d", "Last 7 days"))
WINDOW_S = {"24h": 86400, "7d": 7 * 86400}
SINCES = (
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("", "any time"),
)
SINCE_S = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
SCRIPT_DAYS = 30
SCRIPT_CHART_RUNS = 200
SCRIPT_RECENT_RUNS = 20
ERROR_GROUPS = 100
CALLS_PER_PAGE = 50


def schedule_view(state: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """What the page shows of a schedule and its evaluated state."""
    from ..watch.evaluate import show
    from ..watch.schedules import format_duration

    schedule = state["schedule"]
    job = state.get("job")
    return {
        "describe": schedule.describe(),
        "grace": format_duration(schedule.grace_s),
        "max_runtime": format_duration(schedule.max_runtime_s) if schedule.max_runtime_s else "",
        "min_runtime": format_duration(schedule.min_runtime_s) if schedule.min_runtime_s else "",
        "enabled": schedule.enabled,
        "state": (job.state if job else "unknown") if schedule.enabled else "disabled",
        "next_expected": show(job.next_expected) if job and job.next_expected else "",
        "problems": job.problems if job else [],
        "incidents": state.get("incidents") or [],
        "error": state.get("error"),
    }


class InsightPages:
    """Handlers of the errors, script and integrations pages."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.store = web.store

    def errors_page(self, request: Request) -> Response:
        window = param(request, "window") or "24h"
        window = window if window in WINDOW_S else "24h"
        since = dt.datetime.now(UTC) - dt.timedelta(seconds=WINDOW_S[window])
        groups = self.store.errors(since, ERROR_GROUPS)
        return self.web.render(
            "errors.html",
            nav="errors",
            windows=WINDOWS,
            window=window,
            since_day=since.date().isoformat(),
            failed=[g for g in groups if g.get("source") == "run"],
            rows=[g for g in groups if g.get("source") == "log"],
        )

    def script_page(self, request: Request) -> Response:
        script = str(request.path_params["script"])[:200]
        now = dt.datetime.now(UTC)
        today = now.date()
        since_day = today - dt.timedelta(days=SCRIPT_DAYS - 1)
        days, runs, recent, state = parallel(
            lambda: self.store.script_days(script, since_day),
            lambda: self.store.script_runs(script, SCRIPT_CHART_RUNS),
            lambda: self.store.runs(RunFilter(script=script), limit=SCRIPT_RECENT_RUNS),
            lambda: self.store.schedule_state(script, now) if self.store.has_schedules else None,
        )
        if not days and not runs and not recent.rows:
            return self.web.message("No such script", "No runs of that script.", 404)
        finished = sum(int(d.get("successes") or 0) + int(d.get("failures") or 0) for d in days)
        ok = sum(int(d.get("successes") or 0) for d in days)
        totals = {
            "runs": sum(int(d.get("runs") or 0) for d in days),
            "failures": sum(int(d.get("failures") or 0) for d in days),
            "success_rate": round(100.0 * ok / finished, 1) if finished else None,
        }
        for row in recent.rows:
            row.setdefault("progress_step", None)
        return self.web.render(
            "script.html",
            nav="runs",
            script=script,
            days=SCRIPT_DAYS,
            totals=totals,
            charts=script_charts(days, runs, since_day, today),
            run_count=len(runs),
            schedule=schedule_view(state, now) if state else None,
            page=recent,
            after=None,
            first_url=url("/", script=script),
            next_url=None,
        )

    # -- integrations --------------------------------------------------------------------
    def call_filter(self, request: Request) -> tuple[CallFilter, str]:
        status = param(request, "status")
        since = request.query_params.get("since", "24h")
        since = since if since in SINCE_S or since == "" else "24h"
        f = CallFilter(
            service=param(request, "service"),
            action=param(request, "action"),
            status=status if status in CALL_STATUSES else None,
            since=dt.datetime.now(UTC) - dt.timedelta(seconds=SINCE_S[since]) if since else None,
        )
        return f, since

    def calls_context(self, request: Request) -> dict[str, Any]:
        f, since = self.call_filter(request)
        after = Cursor.decode(param(request, "after"))
        page = self.store.calls(f, after=after, limit=CALLS_PER_PAGE)
        query = {"service": f.service, "action": f.action, "status": f.status, "since": since}
        next_url = (
            url("/integrations/calls", **query, after=page.next.encode()) if page.next else None
        )
        return {"f": f, "since": since, "page": page, "next_url": next_url}

    def integrations_page(self, request: Request) -> Response:
        bucket = "day" if param(request, "bucket") == "day" else "hour"
        context, stats, services = parallel(
            lambda: self.calls_context(request),
            lambda: self.store.call_stats(bucket),
            self.store.call_services,
        )
        f = context["f"]
        actions = sorted({str(r["action"]) for r in stats} | ({f.action} if f.action else set()))
        return self.web.render(
            "integrations.html",
            nav="integrations",
            bucket=bucket,
            charts=call_charts(stats, bucket, dt.datetime.now(UTC)),
            values={"services": services, "actions": actions},
            statuses=CALL_STATUSES,
            sinces=SINCES,
            **context,
        )

    def calls_rows(self, request: Request) -> Response:
        context = self.calls_context(request)
        if not fragment(request):  # a plain visit (no JavaScript): the whole page
            return self.integrations_page(request)
        return self.web.render("_calls_list.html", **context)
