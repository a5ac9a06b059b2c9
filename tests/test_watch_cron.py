"""pg_cron: `migrate` schedules the reaper and the retention when the extension exists, skips cleanly
without it, and `doctor` says which."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from stack.fixtures import Db, FreshStack
from watch_helpers import add_error_row, add_run, cli

JOBS = {
    "supabase-log-reap-stale-runs": ("* * * * *", "select count(*) from public.reap_stale_runs()"),
    "supabase-log-retention": ("17 3 * * *", "call public.run_log_retention()"),
}


def cron_jobs(db: Db) -> dict[str, tuple[str, str]]:
    return {
        name: (sched, cmd)
        for name, sched, cmd in db.fetch("select jobname, schedule, command from cron.job")
    }


def test_migrate_schedules_the_jobs_once_and_their_commands_work(
    cron_db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With pg_cron installed, migrate creates both jobs, keeps them (and hand edits) on later runs, doctor reports them ok, and each job's command does its work when run as pg_cron runs it."""
    monkeypatch.chdir(tmp_path)
    cron_db.execute("create extension if not exists pg_cron")
    code, out, _ = cli(capsys, "migrate", "--db-url", cron_db.dsn)
    assert (
        code == 0
        and "pg_cron: supabase-log-reap-stale-runs, supabase-log-retention scheduled" in out
    )
    assert cron_jobs(cron_db) == JOBS
    cron_db.execute(
        "select cron.alter_job(jobid, schedule => '*/5 * * * *') from cron.job"
        " where jobname = 'supabase-log-reap-stale-runs'"
    )
    cron_db.execute("select cron.unschedule('supabase-log-retention')")
    code, out, _ = cli(capsys, "migrate", "--db-url", cron_db.dsn)
    assert code == 0 and "pg_cron: scheduled supabase-log-retention" in out
    assert cron_jobs(cron_db) == {
        **JOBS,
        "supabase-log-reap-stale-runs": ("*/5 * * * *", JOBS["supabase-log-reap-stale-runs"][1]),
    }
    code, out, _ = cli(capsys, "doctor", "--db-url", cron_db.dsn, "--json")
    check = {c["name"]: c for c in json.loads(out)}["pg_cron jobs"]
    assert check["ok"] is True and "supabase-log-retention at '17 3 * * *'" in check["detail"]

    now = dt.datetime.now(dt.timezone.utc)
    lost = add_run(
        cron_db,
        "job",
        "running",
        now - dt.timedelta(hours=1),
        heartbeat=now - dt.timedelta(minutes=10),
    )
    old = add_run(cron_db, "job", "success", now - dt.timedelta(days=100), seconds=1)
    add_error_row(cron_db, old, now - dt.timedelta(days=100), "old")
    for _, command in JOBS.values():
        with cron_db.connect() as conn:  # a top-level statement in autocommit, as pg_cron runs it
            conn.execute(command)
    assert cron_db.fetchval("select status from runs where id = %s", (lost,)) == "error"
    assert cron_db.fetchval("select count(*) from runs where id = %s", (old,)) == 0
    assert cron_db.fetchval("select count(*) from logs") == 0

    cron_db.execute("select cron.unschedule('supabase-log-retention')")
    code, out, _ = cli(capsys, "doctor", "--db-url", cron_db.dsn)
    assert (
        code == 1 and "FAIL  pg_cron jobs" in out and "not running: supabase-log-retention" in out
    )


def test_without_pg_cron_migrate_skips_and_doctor_says_so(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a database without pg_cron, migrate succeeds and says nothing was scheduled, and doctor marks the check `--` (not a failure) with how to schedule the work instead."""
    _, db = fresh_gateway(migrations=False)
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "migrate", "--db-url", db.dsn)
    assert code == 0 and "pg_cron: not installed, nothing scheduled" in out
    assert db.fetchval("select public.ensure_log_maintenance_jobs()") is None
    assert db.fetchval("select to_regclass('cron.job')") is None
    code, out, _ = cli(capsys, "doctor", "--db-url", db.dsn)
    line = next(x for x in out.splitlines() if "pg_cron jobs" in x)
    assert line.split()[0] == "--" and "pg_cron is not installed" in line
    assert "enable the pg_cron extension" in out and "fix: enable" not in out  # advice, not a failure
