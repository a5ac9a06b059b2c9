"""What state each job is in: pure functions from a schedule, its runs and a clock to problems.

No I/O here: ``check.py`` feeds the rows in and acts on the result. The rules
(docs/watching.md says them for users):

- Expected starts come from the schedule (cron in its time zone, or an interval
  after the previous start). A run belongs to the latest expected start at or
  before its own start (a run up to ``tolerance`` early still counts).
- ``late``: an expected start passed its grace with no run yet, or its run
  started after the grace. ``missed``: the next expected start came (and the
  grace passed) with no run for this one.
- ``too_long``: a run still running, or a successful run that took, longer than
  ``max_runtime_s``. ``too_fast``: a successful run shorter than
  ``min_runtime_s``. ``failed``: a run with status ``error``; ``lost`` when the
  reaper closed it (``error_message`` starting ``lost:``).
- A good run (successful, neither too long nor too fast) ends every problem that
  began before it: such problems are history, not news.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .schedules import Schedule, cron_times, format_duration, iso_utc, parse_ts

# Most serious first: a job's state is its most serious problem.
KINDS = ("lost", "failed", "too_long", "missed", "late", "too_fast")
DAY_S = 86400.0


def show(when: dt.datetime | None) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a job; ``(script_name, kind, period)`` names its incident."""

    script_name: str
    kind: str
    period: str
    event_at: dt.datetime
    run_id: str | None
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobState:
    """A job at one moment: its problems (at most one per kind, the newest), runs and next start."""

    script_name: str
    schedule: Schedule | None
    problems: list[Problem]
    last_run: dict[str, Any] | None = None
    last_good: dict[str, Any] | None = None
    next_expected: dt.datetime | None = None
    recovered: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        for kind in KINDS:
            if any(p.kind == kind for p in self.problems):
                return kind
        return "recovered" if self.recovered else "ok"


def duration_ms(run: dict[str, Any]) -> int | None:
    if run.get("duration_ms") is not None:
        return int(run["duration_ms"])
    started, finished = parse_ts(run.get("started_at")), parse_ts(run.get("finished_at"))
    if started and finished:
        return int((finished - started).total_seconds() * 1000)
    return None


def is_good(run: dict[str, Any], schedule: Schedule | None) -> bool:
    """Successful, and within the schedule's runtime limits."""
    if run.get("status") != "success":
        return False
    ms = duration_ms(run)
    if schedule is not None and ms is not None:
        if schedule.max_runtime_s is not None and ms > schedule.max_runtime_s * 1000:
            return False
        if schedule.min_runtime_s is not None and ms < schedule.min_runtime_s * 1000:
            return False
    return True


def window(schedule: Schedule, now: dt.datetime) -> tuple[dt.datetime, float]:
    """Where a check starts looking (lookback: 3 periods, between a day and 35 days), and the
    tolerance for early starts (a quarter period, at most a minute)."""
    period_s = schedule.typical_period_s(now - dt.timedelta(days=1))
    lookback_s = min(max(3 * period_s, DAY_S), 35 * DAY_S)
    start = now - dt.timedelta(seconds=lookback_s)
    if schedule.created_at is not None and schedule.created_at > start:
        start = schedule.created_at
    return start, min(60.0, period_s / 4)


def _interval_slots(
    interval_s: int, anchor: dt.datetime, starts: list[dt.datetime], now: dt.datetime, tol_s: float
) -> list[dt.datetime]:
    """Expected starts of an interval schedule: each run starts a new chain."""
    step, tol = dt.timedelta(seconds=interval_s), dt.timedelta(seconds=tol_s)
    later = sorted(t for t in starts if t > anchor)
    slots: list[dt.datetime] = []
    previous: dt.datetime | None = anchor
    while previous is not None:
        upcoming = later.pop(0) if later else None
        slot = previous + step
        while slot <= now and (upcoming is None or slot <= upcoming + tol):
            slots.append(slot)
            slot += step
        previous = upcoming
    return slots


def _next_after(schedule: Schedule, slot: dt.datetime) -> dt.datetime:
    if schedule.interval_s is not None:
        return slot + dt.timedelta(seconds=schedule.interval_s)
    return schedule.next_start(slot, None) or slot + dt.timedelta(days=3650)


def _slot_problems(
    schedule: Schedule,
    runs: list[tuple[dt.datetime, dict[str, Any]]],
    now: dt.datetime,
    start: dt.datetime,
    tol_s: float,
) -> list[Problem]:
    name, grace = schedule.script_name, dt.timedelta(seconds=schedule.grace_s)
    if schedule.interval_s is not None:
        before = [t for t, _ in runs if t <= start]
        anchor = max(before) if before else start
        slots = _interval_slots(schedule.interval_s, anchor, [t for t, _ in runs], now, tol_s)
    else:
        assert schedule.cron is not None
        slots = cron_times(schedule.cron, schedule.timezone, start, now)
    tol = dt.timedelta(seconds=tol_s)
    out: list[Problem] = []
    for i, slot in enumerate(slots):
        nxt = slots[i + 1] if i + 1 < len(slots) else _next_after(schedule, slot)
        if schedule.interval_s is not None:
            nxt = slot + dt.timedelta(seconds=schedule.interval_s)
        own = [(t, r) for t, r in runs if slot - tol <= t < nxt - tol]
        expected = {"expected_at": iso_utc(slot), "grace_s": schedule.grace_s}
        period = iso_utc(slot)
        if own:
            started, run = own[0]
            if started > slot + grace:
                late_by = format_duration((started - slot).total_seconds())
                out.append(
                    Problem(
                        name,
                        "late",
                        period,
                        slot,
                        str(run["id"]),
                        f"started {late_by} late (expected {show(slot)}, grace {format_duration(schedule.grace_s)})",
                        {**expected, "started_at": iso_utc(started), "run_id": str(run["id"])},
                    )
                )
        elif now >= max(nxt, slot + grace):
            out.append(
                Problem(
                    name,
                    "missed",
                    period,
                    slot,
                    None,
                    f"no run started for {show(slot)} (grace {format_duration(schedule.grace_s)}; next expected {show(nxt)})",
                    {**expected, "next_expected_at": iso_utc(nxt)},
                )
            )
        elif now > slot + grace:
            out.append(
                Problem(
                    name,
                    "late",
                    period,
                    slot,
                    None,
                    f"not started: expected {show(slot)}, grace {format_duration(schedule.grace_s)} passed",
                    expected,
                )
            )
    return out


def run_problems(
    script_name: str,
    schedule: Schedule | None,
    runs: list[tuple[dt.datetime, dict[str, Any]]],
    now: dt.datetime,
) -> list[Problem]:
    """Failed, lost, too long and too fast runs."""
    out: list[Problem] = []
    for started, run in runs:
        rid, status, ms = str(run["id"]), run.get("status"), duration_ms(run)
        base = {
            "run_id": rid,
            "started_at": iso_utc(started),
            "duration_ms": ms,
            "status": status,
            "error_message": run.get("error_message"),
        }
        took = format_duration(ms / 1000) if ms is not None else "?"

        def add(kind: str, summary: str, **extra: Any) -> None:
            out.append(Problem(script_name, kind, rid, started, rid, summary, {**base, **extra}))  # noqa: B023

        if status == "error":
            message = str(run.get("error_message") or "").strip()
            kind = "lost" if message.startswith("lost:") else "failed"
            first = message.splitlines()[0] if message else "no error message"
            add(kind, first if kind == "lost" else f"failed after {took}: {first}")
            continue
        limit = schedule.max_runtime_s if schedule else None
        floor = schedule.min_runtime_s if schedule else None
        if status == "running" and limit is not None:
            running_s = (now - started).total_seconds()
            if running_s > limit:
                add(
                    "too_long",
                    f"running for {format_duration(running_s)}, limit {format_duration(limit)}",
                    running_s=int(running_s),
                    max_runtime_s=limit,
                )
        elif status == "success" and ms is not None:
            if limit is not None and ms > limit * 1000:
                add("too_long", f"took {took}, limit {format_duration(limit)}", max_runtime_s=limit)
            if floor is not None and ms < floor * 1000:
                add(
                    "too_fast",
                    f"finished in {took}, expected at least {format_duration(floor)}",
                    min_runtime_s=floor,
                )
    return out


def _dated(runs: list[dict[str, Any]]) -> list[tuple[dt.datetime, dict[str, Any]]]:
    out = []
    seen: set[str] = set()
    for run in runs:
        started = parse_ts(run.get("started_at"))
        if started is not None and str(run["id"]) not in seen:
            seen.add(str(run["id"]))
            out.append((started, run))
    return sorted(out, key=lambda pair: (pair[0], str(pair[1]["id"])))


def settle(
    script_name: str,
    schedule: Schedule | None,
    problems: list[Problem],
    runs: list[tuple[dt.datetime, dict[str, Any]]],
    now: dt.datetime,
) -> JobState:
    """Drop problems a later good run ended; keep the newest problem of each kind."""
    good = [(t, r) for t, r in runs if is_good(r, schedule) and t <= now]
    last_good = good[-1] if good else None
    live = [
        p
        for p in problems
        if last_good is None
        or not (last_good[0] > p.event_at and str(last_good[1]["id"]) != p.run_id)
    ]
    newest: dict[str, Problem] = {}
    counts: dict[str, int] = {}
    for p in sorted(live, key=lambda p: p.event_at):
        newest[p.kind] = p
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return JobState(
        script_name=script_name,
        schedule=schedule,
        problems=[newest[k] for k in KINDS if k in newest],
        last_run=runs[-1][1] if runs else None,
        last_good=last_good[1] if last_good else None,
        counts=counts,
    )


def evaluate_schedule(schedule: Schedule, runs: list[dict[str, Any]], now: dt.datetime) -> JobState:
    """The state of a scheduled job at ``now`` from its runs around the check window."""
    start, tol_s = window(schedule, now)
    dated = [(t, r) for t, r in _dated(runs) if t <= now]
    in_window = [(t, r) for t, r in dated if t >= start or r.get("status") == "running"]
    problems = _slot_problems(schedule, dated, now, start, tol_s)
    problems += run_problems(schedule.script_name, schedule, in_window, now)
    state = settle(schedule.script_name, schedule, problems, dated, now)
    last_start = dated[-1][0] if dated else None
    state.next_expected = schedule.next_start(now, last_start)
    return state


def evaluate_unscheduled(
    script_name: str, lost: list[dict[str, Any]], good: list[dict[str, Any]], now: dt.datetime
) -> JobState:
    """A job without a schedule: only runs the reaper closed count (no process is left to tell)."""
    dated = _dated([*lost, *good])
    problems = [p for p in run_problems(script_name, None, _dated(lost), now) if p.kind == "lost"]
    return settle(script_name, None, problems, [(t, r) for t, r in dated if t <= now], now)


def window_start(schedule: Schedule, now: dt.datetime) -> dt.datetime:
    """The earliest run start a check of ``schedule`` at ``now`` needs (with the tolerance)."""
    start, tol_s = window(schedule, now)
    return start - dt.timedelta(seconds=tol_s + (schedule.interval_s or 0))
