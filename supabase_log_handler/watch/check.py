"""One ``supabase-log check``: reap stale runs, evaluate every schedule, alert once, recover once.

Feeds ``store.WatchDb`` rows into ``evaluate`` and acts on the states: a good
run resolves the job's open incidents (``resolve_job_incidents`` hands them to
exactly one checker, which sends the one recovery message); each live problem
is claimed (``claim_job_incident``) and only the claimant sends its alert.
Sending is bounded per message; a message that reached no channel leaves the
incident unsent, and a later check retries it after five minutes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .alerts import Delivery, deliver, incident_message, recovery_message, redactor_for
from .channels import Channel, pick
from .evaluate import JobState, evaluate_schedule, evaluate_unscheduled, window_start
from .schedules import iso_utc, parse_ts
from .store import WatchDb

UNSCHEDULED_LOOKBACK = dt.timedelta(hours=24)
RUN_KINDS = ("failed", "lost", "too_long", "too_fast", "late")


@dataclass
class CheckOptions:
    now: dt.datetime
    alerts: bool = True
    stale_multiple: float = 3.0
    default_heartbeat_s: float = 30.0
    realert_s: float | None = None
    send_timeout_s: float = 10.0


@dataclass
class CheckReport:
    now: dt.datetime
    jobs: list[JobState] = field(default_factory=list)
    reaped: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return any(job.problems for job in self.jobs)

    def as_json(self) -> dict[str, Any]:
        return {
            "now": iso_utc(self.now),
            "needs_attention": self.needs_attention,
            "jobs": [_job_json(job) for job in self.jobs],
            "reaped": self.reaped,
            "alerts": self.alerts,
            "notes": self.notes,
        }


def _job_json(job: JobState) -> dict[str, Any]:
    last = job.last_run
    return {
        "script_name": job.script_name,
        "state": job.state,
        "schedule": job.schedule.describe() if job.schedule else None,
        "problems": [
            {
                "kind": p.kind,
                "period": p.period,
                "event_at": iso_utc(p.event_at),
                "run_id": p.run_id,
                "summary": p.summary,
                "count": job.counts.get(p.kind, 1),
            }
            for p in job.problems
        ],
        "last_run": None
        if last is None
        else {k: last.get(k) for k in ("id", "status", "started_at", "duration_ms")},
        "next_expected": iso_utc(job.next_expected) if job.next_expected else None,
    }


def evaluate_all(db: WatchDb, opts: CheckOptions, report: CheckReport) -> None:
    """Reap stale runs, then compute every job's state (no incidents touched)."""
    now = opts.now
    report.reaped = [
        {k: (iso_utc(v) if isinstance(v, dt.datetime) else v) for k, v in row.items()}
        for row in db.reap(
            multiple=opts.stale_multiple, default_interval_s=opts.default_heartbeat_s, as_of=now
        )
    ]
    # closed just now: their finished_at (the last heartbeat) may be older than any window
    reaped = db.runs_by_id([str(r["id"]) for r in report.reaped])
    schedules = [s for s in db.schedules() if s.enabled]
    for schedule in schedules:
        start = window_start(schedule, now)
        runs = db.runs_started(schedule.script_name, start, now)
        runs += db.running_since_before(schedule.script_name, start)
        runs += [r for r in reaped if r["script_name"] == schedule.script_name]
        report.jobs.append(evaluate_schedule(schedule, runs, now))
    scheduled = {s.script_name for s in schedules}
    lost: dict[str, list[dict[str, Any]]] = {}
    for run in [*reaped, *db.lost_runs(now - UNSCHEDULED_LOOKBACK, now)]:
        if run["script_name"] not in scheduled:
            lost.setdefault(str(run["script_name"]), []).append(run)
    good: dict[str, list[dict[str, Any]]] = {}
    for run in db.last_good_runs(sorted(lost), now):
        good.setdefault(str(run["script_name"]), []).append(run)
    for name in sorted(lost):
        report.jobs.append(evaluate_unscheduled(name, lost[name], good.get(name, []), now))


def _record(report: CheckReport, event: str, job: JobState, kind: str, outcome: Delivery) -> None:
    report.alerts.append(
        {
            "event": event,
            "script_name": job.script_name,
            "kind": kind,
            "sent": outcome.sent,
            "failed": outcome.failed,
            "timed_out": outcome.timed_out,
        }
    )


def alert(
    db: WatchDb, channels: dict[str, Channel], opts: CheckOptions, report: CheckReport
) -> None:
    """Recoveries first (they close old incidents), then one claim per live problem."""
    redactor = redactor_for(channels)
    if not channels:
        report.notes.append(
            "no alert channel is configured: incidents are recorded, nothing is sent "
            "(see docs/watching.md, Alerts)"
        )
    for job in report.jobs:
        wanted = job.schedule.channels if job.schedule else None
        targets, missing = pick(channels, wanted)
        if missing:
            report.notes.append(
                f"{job.script_name}: channel(s) not configured: {', '.join(missing)}"
            )
        good = job.last_good
        started = parse_ts(good.get("started_at")) if good else None
        if good is not None and started is not None:
            resolved = db.resolve(job.script_name, started, str(good["id"]), opts.now)
            told = [r for r in resolved if r.get("last_alert_at")]
            if resolved:
                job.recovered = True
            if told:
                outcome = deliver(
                    recovery_message(job.script_name, told, good),
                    targets,
                    deadline_s=opts.send_timeout_s,
                    redactor=redactor,
                )
                _record(
                    report, "recovery", job, ",".join(sorted({r["kind"] for r in told})), outcome
                )
                if outcome.ok:
                    for row in told:
                        db.mark_incident(str(row["id"]), "recovery_sent_at", opts.now)
        for problem in job.problems:
            detail = redactor.value({**problem.detail, "summary": problem.summary})
            incident = db.claim(
                script_name=job.script_name,
                kind=problem.kind,
                period=problem.period,
                event_at=problem.event_at,
                run_id=problem.run_id,
                detail=detail,
                now=opts.now,
                realert_s=opts.realert_s,
            )
            if incident is None:
                continue
            errors = (
                db.error_rows(problem.run_id)
                if problem.run_id and problem.kind in RUN_KINDS
                else []
            )
            repeat = int(incident.get("alerts") or 1) > 1 and incident.get("sent_at") is not None
            outcome = deliver(
                incident_message(incident, errors, repeat=repeat),
                targets,
                deadline_s=opts.send_timeout_s,
                redactor=redactor,
            )
            _record(report, "incident", job, problem.kind, outcome)
            if outcome.ok:
                db.mark_incident(str(incident["id"]), "sent_at", opts.now)


def recovered_without_alerts(db: WatchDb, report: CheckReport) -> None:
    """For ``--no-alerts``: mark jobs whose open incidents a good run would close."""
    open_by_job: dict[str, list[dict[str, Any]]] = {}
    for row in db.open_incidents():
        open_by_job.setdefault(str(row["script_name"]), []).append(row)
    for job in report.jobs:
        good = job.last_good
        started = parse_ts(good.get("started_at")) if good else None
        if good is None or started is None:
            continue
        for row in open_by_job.get(job.script_name, []):
            event_at = parse_ts(row.get("event_at"))
            if event_at and event_at < started and str(row.get("run_id")) != str(good["id"]):
                job.recovered = True


def ensure_partitions(db: WatchDb, report: CheckReport) -> None:
    """Partitioned log tables (``migrate --partitioned``): make next months' partitions now."""
    from ..errors import DeliveryError

    try:
        made = db.rpc("ensure_log_partitions", {})
    except DeliveryError as exc:
        if exc.code in ("PGRST202", "42883") or exc.status == 404:
            return  # the tables are not partitioned: nothing to make
        raise
    if made:
        report.notes.append(f"partitions created: {', '.join(made)}")


def run_check(db: WatchDb, channels: dict[str, Channel], opts: CheckOptions) -> CheckReport:
    report = CheckReport(now=opts.now)
    ensure_partitions(db, report)
    evaluate_all(db, opts, report)
    if opts.alerts:
        alert(db, channels, opts, report)
    else:
        recovered_without_alerts(db, report)
    return report
