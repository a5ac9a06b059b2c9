"""The read-only views: ``runs``, ``logs``, ``errors`` and ``stats``.

Owns what each view selects and how it is shown. Every view reads through
``sinks.factory.make_sink`` (``Sink.select``), so Supabase and the local store are
read the same way. Tables are for people (UTC times, aligned columns, one line
per row); ``--json`` writes the rows as a JSON array (``stats``: an object keyed
by script name) for machines.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..sinks import Filter, Sink
from ..watch.summary import summarize
from ._common import (
    CommandError,
    emit_json,
    first_line,
    iso,
    levels_from,
    open_reader,
    parse_since,
    parse_time,
    select_all,
    show_duration,
    show_time,
    table,
)

STATUSES = ("running", "success", "error")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("runs", help="recent runs", description="Recent runs, newest first.")
    p.add_argument("--script", "-s", help="only this script_name")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--since", help="only runs started since: 30m, 24h, 7d or an ISO date")
    p.add_argument(
        "--limit", "-n", type=int, default=20, help="at most this many runs (default 20)"
    )
    p.add_argument("--json", action="store_true", help="a JSON array of runs rows")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser(
        "logs", help="the log rows of one run", description="The log rows of one run, in order."
    )
    p.add_argument(
        "run_id", metavar="RUN_ID", help="a run id, or 'last' for the newest run (see --script)"
    )
    p.add_argument("--script", "-s", help="with RUN_ID 'last': the newest run of this script")
    p.add_argument("--level", "-l", help="this level and above: DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--step", help="only this step")
    p.add_argument(
        "--limit", "-n", type=int, default=10_000, help="at most this many rows (default 10000)"
    )
    p.add_argument("--json", action="store_true", help="a JSON array of logs rows")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "errors",
        help="ERROR rows across runs",
        description="ERROR rows, newest first, with their script.",
    )
    p.add_argument(
        "--since", default="24h", help="since when (default 24h): 30m, 24h, 7d or an ISO date"
    )
    p.add_argument("--script", "-s", help="only this script_name")
    p.add_argument(
        "--limit", "-n", type=int, default=50, help="at most this many rows (default 50)"
    )
    p.add_argument("--json", action="store_true", help="a JSON array of logs rows with script_name")
    p.set_defaults(func=cmd_errors)

    p = sub.add_parser(
        "stats",
        help="per-script summary",
        description="Per script: runs, outcomes, success rate, duration (average, p50, p95, max), "
        "records, API cost, last run.",
    )
    p.add_argument(
        "--since", default="7d", help="runs started since (default 7d): 30m, 24h, 7d or an ISO date"
    )
    p.add_argument("--script", "-s", help="only this script_name")
    p.add_argument("--json", action="store_true", help="a JSON object keyed by script name")
    p.set_defaults(func=cmd_stats)


# -- runs --------------------------------------------------------------------------------
def query_runs(
    sink: Sink,
    runs_table: str,
    *,
    script: str | None,
    status: str | None,
    since: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    filters: list[Filter] = []
    if script:
        filters.append(("script_name", "eq", script))
    if status:
        filters.append(("status", "eq", status))
    if since:
        filters.append(("started_at", "gte", iso(parse_since(since))))
    return select_all(sink, runs_table, filters, key="started_at", max_rows=max(limit, 0))


def cmd_runs(args: argparse.Namespace) -> int:
    sink, s = open_reader(args.env_file, quiet=args.json)
    try:
        rows = query_runs(
            sink,
            s.runs_table,
            script=args.script,
            status=args.status,
            since=args.since,
            limit=args.limit,
        )
    finally:
        sink.close()
    if args.json:
        emit_json(rows)
        return 0
    table(
        ("ID", "SCRIPT", "STATUS", "STARTED (UTC)", "DURATION", "TRIGGERED BY", "ERROR"),
        (
            (
                r.get("id"),
                r.get("script_name"),
                r.get("status"),
                show_time(r.get("started_at")),
                show_duration(r.get("duration_ms")),
                r.get("triggered_by"),
                first_line(r.get("error_message"), 60),
            )
            for r in rows
        ),
    )
    return 0


# -- logs --------------------------------------------------------------------------------
def _resolve_run(sink: Sink, runs_table: str, run_id: str, script: str | None) -> dict[str, Any]:
    if run_id == "last":
        filters: list[Filter] = [("script_name", "eq", script)] if script else []
        found = sink.select(
            runs_table, filters=filters, order=[("started_at", True), ("id", True)], limit=1
        )
        if not found:
            raise CommandError("no runs yet" + (f" of {script!r}" if script else ""), code=1)
        return found[0]
    try:
        found = sink.select(runs_table, filters=[("id", "eq", run_id)], limit=1)
    except Exception as exc:  # e.g. not a uuid, for PostgreSQL
        raise CommandError(f"no run {run_id!r} ({exc})", code=1) from None
    if not found:
        raise CommandError(f"no run {run_id!r}; `supabase-log runs` lists the recent ones", code=1)
    return found[0]


def query_logs(
    sink: Sink, logs_table: str, run_id: str, *, level: str | None, step: str | None, limit: int
) -> list[dict[str, Any]]:
    filters: list[Filter] = [("run_id", "eq", run_id)]
    levels = levels_from(level)
    if levels is not None:
        filters.append(("level", "in", levels))
    if step:
        filters.append(("step", "eq", step))
    return select_all(
        sink, logs_table, filters, key="timestamp", descending=False, max_rows=max(limit, 0)
    )


def log_time(value: Any) -> str:
    when = parse_time(value)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if when else ""


def cmd_logs(args: argparse.Namespace) -> int:
    sink, s = open_reader(args.env_file, quiet=args.json)
    try:
        run = _resolve_run(sink, s.runs_table, args.run_id, args.script)
        rows = query_logs(
            sink, s.logs_table, str(run["id"]), level=args.level, step=args.step, limit=args.limit
        )
    finally:
        sink.close()
    if args.json:
        emit_json(rows)
        return 0
    table(
        ("TIME (UTC)", "LEVEL", "STEP", "MESSAGE"),
        (
            (
                log_time(r.get("timestamp")),
                r.get("level"),
                r.get("step"),
                first_line(r.get("message"), 200),
            )
            for r in rows
        ),
    )
    return 0


# -- errors ------------------------------------------------------------------------------
def query_errors(
    sink: Sink, runs_table: str, logs_table: str, *, since: str, script: str | None, limit: int
) -> list[dict[str, Any]]:
    filters: list[Filter] = [
        ("level", "eq", "ERROR"),
        ("timestamp", "gte", iso(parse_since(since))),
    ]
    rows = select_all(
        sink, logs_table, filters, key="timestamp", max_rows=None if script else max(limit, 0)
    )
    names: dict[str, str | None] = {}
    ids = sorted({str(r.get("run_id")) for r in rows})
    for start in range(0, len(ids), 100):
        for run in sink.select(runs_table, filters=[("id", "in", ids[start : start + 100])]):
            names[str(run["id"])] = run.get("script_name")
    out = []
    for r in rows:
        name = names.get(str(r.get("run_id")))
        if script and name != script:
            continue
        out.append({**r, "script_name": name})
    return out[: max(limit, 0)]


def cmd_errors(args: argparse.Namespace) -> int:
    sink, s = open_reader(args.env_file, quiet=args.json)
    try:
        rows = query_errors(
            sink, s.runs_table, s.logs_table, since=args.since, script=args.script, limit=args.limit
        )
    finally:
        sink.close()
    if args.json:
        emit_json(rows)
        return 0
    table(
        ("TIME (UTC)", "SCRIPT", "RUN", "STEP", "MESSAGE"),
        (
            (
                log_time(r.get("timestamp")),
                r.get("script_name"),
                r.get("run_id"),
                r.get("step"),
                first_line(r.get("message"), 120),
            )
            for r in rows
        ),
    )
    return 0


# -- stats -------------------------------------------------------------------------------
def compute_stats(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per script: outcomes, success rate, duration average/p50/p95/max, records, calls, cost, last run."""
    return summarize(runs)


def show_cost(value: Any) -> str:
    return f"{float(value):.4f}".rstrip("0").rstrip(".") if value else "0"


def cmd_stats(args: argparse.Namespace) -> int:
    sink, s = open_reader(args.env_file, quiet=args.json)
    filters: list[Filter] = [("started_at", "gte", iso(parse_since(args.since)))]
    if args.script:
        filters.append(("script_name", "eq", args.script))
    try:
        runs = select_all(sink, s.runs_table, filters, key="started_at")
    finally:
        sink.close()
    stats = compute_stats(runs)
    if args.json:
        emit_json(stats)
        return 0
    table(
        (
            "SCRIPT",
            "RUNS",
            "OK",
            "FAILED",
            "RUNNING",
            "AVG DURATION",
            "P50",
            "P95",
            "MAX",
            "FETCHED",
            "INSERTED",
            "UPDATED",
            "REC FAILED",
            "COST",
            "LAST RUN (UTC)",
            "LAST STATUS",
        ),
        (
            (
                name,
                st["total"],
                st["succeeded"],
                st["failed"],
                st["running"],
                show_duration(st["avg_duration_ms"]),
                show_duration(st["p50_duration_ms"]),
                show_duration(st["p95_duration_ms"]),
                show_duration(st["max_duration_ms"]),
                st["records"]["fetched"],
                st["records"]["inserted"],
                st["records"]["updated"],
                st["records"]["failed"],
                show_cost(st["api_cost"]),
                show_time(st["last_run"]["started_at"]),
                st["last_run"]["status"],
            )
            for name, st in stats.items()
        ),
    )
    return 0
