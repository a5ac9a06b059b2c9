"""``supabase-log tail``: follow one run, or every new run of a script, live.

Owns the polling loop. Each poll reads the followed runs' status first and then
their new rows (a run's rows are delivered before its final state, so the rows
read after seeing it finished are all of them). Rows are found by timestamp with
a look-back window, because rows from several processes can arrive slightly out
of order; ids already shown are skipped. The loop ends when the followed run
finishes (``RUN_ID``, or ``--script`` with ``--until-finished``), after
``--timeout`` seconds, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time
from typing import Any

from ..sinks import Filter, Sink
from ._common import CommandError, iso, levels_from, open_reader, parse_time, show_duration
from .views import log_time

LOOKBACK_S = 10.0
PAGE = 1000


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tail",
        help="follow a run or a script live",
        description="Print a run's rows as they arrive (RUN_ID), or those of every new run of a script (--script).",
    )
    p.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="the run to follow ('last': the newest run)"
    )
    p.add_argument(
        "--script", "-s", help="follow runs of this script that are running or start from now on"
    )
    p.add_argument(
        "--until-finished",
        action="store_true",
        help="with --script: stop when the first followed run ends",
    )
    p.add_argument("--level", "-l", help="this level and above")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per row (JSON lines)")
    p.set_defaults(func=cmd_tail)


class _Followed:
    def __init__(self, run_id: str, script: str | None) -> None:
        self.run_id = run_id
        self.script = script
        self.cursor: dt.datetime | None = None
        self.seen: set[str] = set()
        self.status: str | None = None
        self.row: dict[str, Any] | None = None
        self.done = False


class Tail:
    def __init__(
        self,
        sink: Sink,
        runs_table: str,
        logs_table: str,
        *,
        levels: list[str] | None,
        json_lines: bool,
        show_run: bool,
    ) -> None:
        self.sink = sink
        self.runs_table = runs_table
        self.logs_table = logs_table
        self.levels = levels
        self.json_lines = json_lines
        self.show_run = show_run
        self.followed: dict[str, _Followed] = {}
        self.finished: list[_Followed] = []

    def follow(self, run_id: str, script: str | None = None) -> None:
        if run_id not in self.followed:
            self.followed[run_id] = _Followed(run_id, script)

    def poll(self) -> None:
        """One round: status of every followed run, then its new rows."""
        active = [f for f in self.followed.values() if not f.done]
        if not active:
            return
        by_id = {
            str(r["id"]): r
            for r in self.sink.select(
                self.runs_table, filters=[("id", "in", [f.run_id for f in active])]
            )
        }
        for f in active:
            row = by_id.get(f.run_id)
            finished = row is not None and row.get("status") not in (None, "running")
            self._rows(f)
            if finished:
                assert row is not None
                f.row, f.status, f.done = row, str(row.get("status")), True
                self.finished.append(f)
                self._announce_end(f)

    def _rows(self, f: _Followed) -> None:
        bound = None if f.cursor is None else f.cursor - dt.timedelta(seconds=LOOKBACK_S)
        while True:
            filters: list[Filter] = [("run_id", "eq", f.run_id)]
            if self.levels is not None:
                filters.append(("level", "in", self.levels))
            if bound is not None:
                filters.append(("timestamp", "gte", iso(bound)))
            rows = self.sink.select(
                self.logs_table,
                filters=filters,
                order=[("timestamp", False), ("id", False)],
                limit=PAGE,
            )
            fresh = [r for r in rows if str(r.get("id")) not in f.seen]
            for r in fresh:
                f.seen.add(str(r.get("id")))
                when = parse_time(r.get("timestamp"))
                if when is not None and (f.cursor is None or when > f.cursor):
                    f.cursor = when
                self._print(r)
            if len(rows) < PAGE or not fresh:
                return
            bound = parse_time(rows[-1].get("timestamp"))

    def _print(self, row: dict[str, Any]) -> None:
        if self.json_lines:
            line = json.dumps(row, ensure_ascii=False, default=str)
        else:
            prefix = f"{str(row.get('run_id'))[:8]}  " if self.show_run else ""
            line = f"{prefix}{log_time(row.get('timestamp'))}  {row.get('level')!s:<7}  {row.get('step')!s:<8}  {row.get('message')}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _announce_end(self, f: _Followed) -> None:
        if self.json_lines or f.row is None:
            return
        duration = f.row.get("duration_ms")
        took = f" in {show_duration(duration)}" if duration is not None else ""
        sys.stdout.write(
            f"-- run {f.run_id} ({f.row.get('script_name')}) finished: {f.status}{took}\n"
        )
        sys.stdout.flush()


def _find_runs(sink: Sink, runs_table: str, script: str, since: dt.datetime) -> list[str]:
    running = sink.select(
        runs_table, filters=[("script_name", "eq", script), ("status", "eq", "running")], limit=100
    )
    recent = sink.select(
        runs_table,
        filters=[("script_name", "eq", script), ("started_at", "gte", iso(since))],
        limit=100,
    )
    return [str(r["id"]) for r in sorted(running + recent, key=lambda r: str(r.get("started_at")))]


def cmd_tail(args: argparse.Namespace) -> int:
    if not args.run_id and not args.script:
        raise CommandError("give a RUN_ID to follow, or --script NAME")
    if args.interval <= 0:
        raise CommandError("--interval must be positive")
    sink, s = open_reader(args.env_file, quiet=args.json)
    started = dt.datetime.now(dt.timezone.utc)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    tail = Tail(
        sink,
        s.runs_table,
        s.logs_table,
        levels=levels_from(args.level),
        json_lines=args.json,
        show_run=bool(args.script and not args.run_id),
    )
    stop = threading.Event()
    try:
        if args.run_id:
            run_id = args.run_id
            if run_id == "last":
                filters: list[Filter] = [("script_name", "eq", args.script)] if args.script else []
                last = sink.select(
                    s.runs_table, filters=filters, order=[("started_at", True)], limit=1
                )
                if not last:
                    raise CommandError("no runs yet", code=1)
                run_id = str(last[0]["id"])
            tail.follow(run_id)
        while True:
            if args.script and not args.run_id:
                # Runs that started a little before tail did are included: they may still be starting.
                for run_id in _find_runs(
                    sink, s.runs_table, args.script, started - dt.timedelta(seconds=LOOKBACK_S)
                ):
                    tail.follow(run_id, args.script)
            tail.poll()
            if args.run_id and tail.finished:
                return 1 if tail.finished[0].status == "error" else 0
            if args.script and args.until_finished and not args.run_id and tail.finished:
                return 1 if tail.finished[0].status == "error" else 0
            wait = args.interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0
                wait = min(wait, left)
            stop.wait(wait)
    except KeyboardInterrupt:
        return 130
    finally:
        sink.close()
