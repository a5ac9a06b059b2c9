"""The Runs and Run pages, and the fragments htmx asks them for.

- ``/``: runs, newest first, filtered by script, status, trigger, dates and error
  text, a keyset page at a time; running runs refresh their own row
  (``/runs/{id}/progress``: elapsed time, current step, heartbeat, records).
- ``/runs/{id}``: metadata and metrics, the step timeline, the log stream (level
  and text filters, ``/runs/{id}/logs`` for more rows) and the run's integration
  calls. While the run runs, the end of the stream polls ``/runs/{id}/tail`` for
  the rows after the last one shown; when the run has finished the last poll
  shows its final status and polling stops.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..cli._common import levels_from
from ..errors import SupabaseLogHandlerError
from .format import parse_time
from .store import LEVELS, RUN_STATUSES, Cursor, Page, RunFilter, StoreError
from .web import Web, day_param, fragment, parallel, param, url

UTC = dt.timezone.utc
RUNS_PER_PAGE = 50
LOGS_PER_PAGE = 200
TIMELINE_WIDTH = 1000


def run_id_of(request: Request) -> str | None:
    try:
        return str(uuid.UUID(request.path_params["run_id"]))
    except ValueError:
        return None


def timeline(run: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Where each step's bar sits on a 0..1000 axis from the run's start to its last step's end."""
    starts = [parse_time(s.get("first_at")) for s in steps]
    ends = [parse_time(s.get("ended_at")) for s in steps]
    known = [t for t in [parse_time(run.get("started_at")), *starts] if t is not None]
    finish = [t for t in [parse_time(run.get("finished_at")), *ends] if t is not None]
    if not known or not finish:
        return {"steps": []}
    t0, t1 = min(known), max(finish)
    span_s = max((t1 - t0).total_seconds(), 0.001)
    total_ms = sum(int(s.get("spent_ms") or 0) for s in steps) or 1
    out = []
    for s, first, last in zip(steps, starts, ends, strict=True):
        first = first or t0
        last = last or first
        x = (first - t0).total_seconds() / span_s * TIMELINE_WIDTH
        w = max((last - first).total_seconds() / span_s * TIMELINE_WIDTH, 2.0)
        out.append(
            {
                **s,
                "x": f"{min(x, TIMELINE_WIDTH - 2):.1f}",
                "w": f"{min(w, TIMELINE_WIDTH - x):.1f}" if x < TIMELINE_WIDTH - 2 else "2",
                "share": f"{100.0 * int(s.get('spent_ms') or 0) / total_ms:.1f}",
            }
        )
    return {"steps": out}


class RunPages:
    """Handlers of the runs list and of one run."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.store = web.store

    # -- the runs list ---------------------------------------------------------------
    def run_filter(self, request: Request) -> tuple[RunFilter, dict[str, str]]:
        since_day, until_day = day_param(request, "from"), day_param(request, "to")
        status = param(request, "status")
        f = RunFilter(
            script=param(request, "script"),
            status=status if status in RUN_STATUSES else None,
            trigger=param(request, "trigger"),
            since=dt.datetime.combine(since_day, dt.time(), UTC) if since_day else None,
            until=dt.datetime.combine(until_day, dt.time(), UTC) + dt.timedelta(days=1)
            if until_day
            else None,
            text=param(request, "q"),
        )
        dates = {
            "from": since_day.isoformat() if since_day else "",
            "to": until_day.isoformat() if until_day else "",
        }
        return f, dates

    def with_progress(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Running runs get their current step (their newest row's)."""
        running = [row for row in rows if row.get("status") == "running"]
        newest = parallel(*[lambda r=row: self.store.last_log(str(r["id"])) for row in running])
        for row, last in zip(running, newest, strict=True):
            row["progress_step"] = last.get("step") if last else None
        return rows

    def runs_page(self, request: Request) -> Response:
        f, dates = self.run_filter(request)
        after = Cursor.decode(param(request, "after"))
        page, values = parallel(
            lambda: self.store.runs(f, after=after, limit=RUNS_PER_PAGE),
            lambda: {} if fragment(request) else self.store.filter_values(),
        )
        assert isinstance(page, Page)
        self.with_progress(page.rows)
        query = {
            "script": f.script,
            "status": f.status,
            "trigger": f.trigger,
            "from": dates["from"],
            "to": dates["to"],
            "q": f.text,
        }
        context: dict[str, Any] = {
            "page": page,
            "after": after,
            "first_url": url("/", **query),
            "next_url": url("/", **query, after=page.next.encode()) if page.next else None,
        }
        if fragment(request):
            response = self.web.render("_runs_table.html", **context)
            response.headers["HX-Push-Url"] = url(
                "/", **query, after=after.encode() if after else None
            )
            return response
        return self.web.render(
            "runs.html",
            nav="runs",
            f=f,
            dates=dates,
            values=values,
            statuses=RUN_STATUSES,
            **context,
        )

    def progress(self, request: Request) -> Response:
        run_id = run_id_of(request)
        run = self.store.run(run_id) if run_id else None
        if run is None:
            return Response(status_code=404)
        self.with_progress([run])
        return self.web.render("_run_row.html", run=run)

    # -- one run ---------------------------------------------------------------------
    def log_query(self, request: Request) -> tuple[str | None, list[str] | None, str | None]:
        level = param(request, "level")
        level = level.upper() if level and level.upper() in LEVELS else None
        try:
            levels = levels_from(level)
        except SupabaseLogHandlerError:  # pragma: no cover - level is checked above
            levels = None
        return level, levels, param(request, "q")

    def log_context(
        self,
        run: dict[str, Any],
        page: Page,
        level: str | None,
        q: str | None,
        after: Cursor | None,
    ) -> dict[str, Any]:
        base = f"/runs/{run['id']}"
        tail_url = None
        if run.get("status") == "running" and page.next is None:
            last = page.rows[-1] if page.rows else None
            cursor = Cursor(str(last["timestamp"]), str(last["id"])) if last else after
            tail_url = url(
                f"{base}/tail", level=level, q=q, after=cursor.encode() if cursor else None
            )

        def logs_url(cursor: Cursor) -> str:
            return url(f"{base}/logs", level=level, q=q, after=cursor.encode())

        return {
            "page": page,
            "logs_url": logs_url,
            "tail_url": tail_url,
            "finished_status": None,
        }

    def calls_or_error(self, run_id: str) -> tuple[list[dict[str, Any]], str | None]:
        try:
            return self.store.run_calls(run_id), None
        except StoreError as exc:  # a project without integration_logs still shows its runs
            return [], str(exc)

    def run_page(self, request: Request) -> Response:
        found = self.run_logs(request, self.store.run_steps, self.calls_or_error)
        if found is None:
            return self.web.message("No such run", "There is no run with that id.", 404)
        run, context, (steps, (calls, calls_error)) = found
        return self.web.render(
            "run.html",
            nav="runs",
            run=run,
            timeline=timeline(run, steps),
            levels=LEVELS,
            calls=calls,
            calls_error=calls_error,
            **context,
        )

    def run_logs(
        self, request: Request, *more: Callable[[str], Any], together: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any], list[Any]] | None:
        """The run, the page of its rows the request asks for (``after``, level, text), and
        ``more`` read for the run; all at once unless ``together`` is False (then the run
        is read first)."""
        run_id = run_id_of(request)
        if run_id is None:
            return None
        level, levels, q = self.log_query(request)
        after = Cursor.decode(param(request, "after"))

        def page() -> Page:
            assert run_id is not None
            return self.store.logs(run_id, levels=levels, text=q, after=after, limit=LOGS_PER_PAGE)

        if together:
            run, rows, *extra = parallel(
                lambda: self.store.run(run_id), page, *[lambda f=f: f(run_id) for f in more]
            )
        else:
            run, rows, extra = self.store.run(run_id), page(), []
        if run is None:
            return None
        context = self.log_context(run, rows, level, q, after) | {"level": level, "q": q}
        return run, context, extra

    def log_rows(self, request: Request) -> Response:
        """The log list for new filters, or (with ``after``) the next page of it."""
        found = self.run_logs(request)
        if found is None:
            return Response(status_code=404)
        run, context, _ = found
        after, level, q = param(request, "after"), context["level"], context["q"]
        if after:
            return self.web.render("_log_rows.html", **context)
        response = self.web.render("_log_list.html", **context)
        response.headers["HX-Push-Url"] = url(f"/runs/{run['id']}", level=level, q=q)
        return response

    def tail(self, request: Request) -> Response:
        """Rows made after ``after``; the next poller while the run runs, else its final status.

        The run's status is read before its rows: a run that had ended by then has
        all its rows stored already (its final state is written after them).
        """
        found = self.run_logs(request, together=False)
        if found is None:
            return Response(status_code=404)
        run, context, _ = found
        if run.get("status") != "running" and context["page"].next is None:
            context["finished_status"] = run.get("status")
        return self.web.render("_log_rows.html", **context)
