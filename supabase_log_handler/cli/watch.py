"""The watch commands: ``schedule set|list|rm``, ``check`` and ``prune``.

Owns their arguments and output; the work is in ``supabase_log_handler.watch``.
``check`` exits 1 when a job needs attention, so cron, CI and pg_cron wrappers
can act on it. See docs/watching.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
from typing import Any

from ..errors import ConfigurationError
from ..watch.alerts import redactor_for
from ..watch.channels import load_channels
from ..watch.check import CheckOptions, run_check
from ..watch.retention import Windows, prune_local, prune_supabase
from ..watch.schedules import Schedule, format_duration, parse_duration_s
from ..watch.store import WatchDb
from ._common import (
    CommandError,
    emit_json,
    parse_time,
    settings,
    show_time,
    table,
)

UTC = dt.timezone.utc


def _duration(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _now(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.now(UTC)
    when = parse_time(text)
    if when is None:
        raise CommandError(f"--now: expected an ISO date and time, got {text!r}")
    return when


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "schedule",
        help="expected schedules of jobs (set, list, rm)",
        description="When each job is expected to run, so `check` can tell late, "
        "missed, too long and too fast runs.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    s = actions.add_parser(
        "set",
        help="create or update a job's schedule",
        usage='supabase-log schedule set NAME ["CRON" | --interval 6h] [options]',
    )
    s.add_argument("name", metavar="NAME", help="the job's script_name")
    s.add_argument("cron", metavar="CRON", nargs="?", help='cron expression, e.g. "0 */6 * * *"')
    s.add_argument("--interval", type=_duration, help="or: expected time between starts (6h, 30m)")
    s.add_argument("--tz", default="UTC", help="time zone of the cron expression (default UTC)")
    s.add_argument(
        "--grace", type=_duration, default=300.0, help="how late a start may be (default 5m)"
    )
    s.add_argument("--max-runtime", type=_duration, help="a longer run is reported")
    s.add_argument("--min-runtime", type=_duration, help="a shorter successful run is reported")
    s.add_argument(
        "--channels",
        help="alert channels, comma-separated: slack,telegram,webhook,email "
        "(default: every configured one)",
    )
    s.add_argument("--disabled", action="store_true", help="keep the schedule but do not check it")
    s.set_defaults(func=cmd_schedule_set)
    s = actions.add_parser("list", help="the schedules")
    s.add_argument("--json", action="store_true", help="a JSON array")
    s.set_defaults(func=cmd_schedule_list)
    s = actions.add_parser("rm", help="remove a job's schedule")
    s.add_argument("name", metavar="NAME")
    s.set_defaults(func=cmd_schedule_rm)

    p = sub.add_parser(
        "check",
        help="late, missed, failed, stale runs: alert once",
        description="Close stale runs, compute each scheduled job's state and alert "
        "once per problem. Exit code 1 when something needs attention.",
    )
    p.add_argument("--json", action="store_true", help="the states as a JSON object")
    p.add_argument("--no-alerts", action="store_true", help="report only: no incident, no message")
    p.add_argument("--now", help="evaluate at this ISO time instead of the clock")
    p.add_argument(
        "--stale-after",
        type=float,
        default=3.0,
        metavar="N",
        help="a running run is lost after N missed heartbeats (default 3)",
    )
    p.add_argument(
        "--realert",
        type=_duration,
        help="repeat an open incident's alert this often (default: $SUPABASE_LOG_ALERT_REPEAT, else never)",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "prune",
        help="delete old logs and runs",
        description="Delete logs and runs older than their retention windows, in "
        "short batches. Deleting a run deletes its logs.",
    )
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.add_argument(
        "--logs-days", type=float, default=90.0, help="logs older than this go (default 90)"
    )
    p.add_argument(
        "--runs-days",
        type=float,
        default=90.0,
        help="successful runs older than this go (default 90)",
    )
    p.add_argument(
        "--failed-runs-days",
        type=float,
        default=180.0,
        help="other runs older than this go (default 180)",
    )
    p.add_argument("--now", help="measure the windows from this ISO time instead of the clock")
    p.add_argument("--json", action="store_true", help="the counts as a JSON object")
    p.set_defaults(func=cmd_prune)


# -- schedule ------------------------------------------------------------------------------
def _db(args: argparse.Namespace) -> WatchDb:
    try:
        return WatchDb.from_settings(settings(args.env_file))
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None


def cmd_schedule_set(args: argparse.Namespace) -> int:
    try:
        schedule = Schedule(
            script_name=args.name,
            cron=args.cron,
            interval_s=None if args.interval is None else round(args.interval),
            timezone=args.tz,
            grace_s=round(args.grace),
            max_runtime_s=None if args.max_runtime is None else round(args.max_runtime),
            min_runtime_s=None if args.min_runtime is None else round(args.min_runtime),
            channels=tuple(args.channels.split(",")) if args.channels else None,
            enabled=not args.disabled,
            declared_in="cli",
        ).validated()
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    db = _db(args)
    try:
        outcome = db.declare_schedule(schedule)
    finally:
        db.close()
    print(f"{outcome}: {schedule.script_name} {schedule.describe()}")
    return 0


def _schedule_json(s: Schedule) -> dict[str, Any]:
    out = s._asdict()
    out.pop("created_at")
    out["channels"] = list(s.channels) if s.channels else None
    return out


def cmd_schedule_list(args: argparse.Namespace) -> int:
    db = _db(args)
    try:
        schedules = db.schedules()
    finally:
        db.close()
    if args.json:
        emit_json([_schedule_json(s) for s in schedules])
        return 0
    table(
        ("JOB", "SCHEDULE", "GRACE", "MAX RUNTIME", "MIN RUNTIME", "CHANNELS", "ENABLED", "SET BY"),
        (
            (
                s.script_name,
                s.describe(),
                format_duration(s.grace_s),
                format_duration(s.max_runtime_s),
                format_duration(s.min_runtime_s),
                ",".join(s.channels) if s.channels else "all",
                "yes" if s.enabled else "no",
                s.declared_in,
            )
            for s in schedules
        ),
    )
    return 0


def cmd_schedule_rm(args: argparse.Namespace) -> int:
    db = _db(args)
    try:
        removed = db.remove_schedule(args.name)
    finally:
        db.close()
    if not removed:
        raise CommandError(
            f"no schedule for {args.name!r}; `supabase-log schedule list` shows them", 1
        )
    print(f"removed: {args.name}")
    return 0


# -- check ---------------------------------------------------------------------------------
def _realert_s(args: argparse.Namespace) -> float | None:
    if args.realert is not None:
        return float(args.realert) or None
    import os

    from ..config import read_env_file

    raw = os.environ.get("SUPABASE_LOG_ALERT_REPEAT") or read_env_file(args.env_file).get(
        "SUPABASE_LOG_ALERT_REPEAT"
    )
    if not raw:
        return None
    try:
        return parse_duration_s(raw) or None
    except ValueError as exc:
        raise CommandError(f"SUPABASE_LOG_ALERT_REPEAT: {exc}") from None


def cmd_check(args: argparse.Namespace) -> int:
    opts = CheckOptions(
        now=_now(args.now),
        alerts=not args.no_alerts,
        stale_multiple=args.stale_after,
        realert_s=_realert_s(args),
    )
    try:
        channels = load_channels(env_file=args.env_file) if opts.alerts else {}
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    db = _db(args)
    try:
        report = run_check(db, channels, opts)
    finally:
        db.close()
    code = 1 if report.needs_attention else 0
    redactor = redactor_for(channels)  # error messages may quote a secret: never print one
    if args.json:
        emit_json(redactor.value(report.as_json()))
        return code
    out = io.StringIO()
    table(
        ("JOB", "STATE", "SCHEDULE", "LAST RUN (UTC)", "LAST STATUS", "NEXT (UTC)", "DETAIL"),
        (
            (
                job.script_name,
                job.state,
                job.schedule.describe() if job.schedule else "(none)",
                show_time((job.last_run or {}).get("started_at")),
                (job.last_run or {}).get("status"),
                show_time(job.next_expected.isoformat()) if job.next_expected else "",
                "; ".join(p.summary for p in job.problems),
            )
            for job in report.jobs
        ),
        out,
    )
    for run in report.reaped:
        out.write(
            f"lost: run {run['id']} of {run['script_name']} "
            f"(no heartbeat since {show_time(run['heartbeat_at'])} UTC)\n"
        )
    for sent in report.alerts:
        where = ", ".join(sent["sent"]) or "no channel"
        problems = sent["failed"] + [f"{n}: timed out" for n in sent["timed_out"]]
        out.write(
            f"alert {sent['event']} {sent['script_name']} {sent['kind']}: sent to {where}"
            + (f" (not sent: {'; '.join(problems)})" if problems else "")
            + "\n"
        )
    for note in report.notes:
        out.write(f"note: {note}\n")
    sys.stdout.write(redactor.text(out.getvalue()))
    sys.stdout.flush()
    return code


# -- prune ---------------------------------------------------------------------------------
def cmd_prune(args: argparse.Namespace) -> int:
    windows = Windows(args.logs_days, args.runs_days, args.failed_runs_days)
    if min(args.logs_days, args.runs_days, args.failed_runs_days) < 0:
        raise CommandError("retention windows must be >= 0 days")
    s = settings(args.env_file)
    now = _now(args.now)
    if s.uses_supabase:
        db = _db(args)
        try:
            result = prune_supabase(db, windows, dry_run=args.dry_run, as_of=now)
        finally:
            db.close()
    else:
        result = prune_local(
            s.resolved_local_path,
            windows,
            dry_run=args.dry_run,
            as_of=now,
            runs_table=s.runs_table,
            logs_table=s.logs_table,
        )
    if args.json:
        emit_json(result.as_dict())
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {result.logs} logs row(s) from before {show_time(result.logs_before)} UTC")
    print(
        f"{verb} {result.runs} run(s): successful from before {show_time(result.success_runs_before)}"
        f" UTC, others from before {show_time(result.failed_runs_before)} UTC (with their logs)"
    )
    return 0
