"""The database's own maintenance jobs under pg_cron: the reaper and the retention.

``supabase-log migrate`` calls :func:`schedule_jobs` after applying the
migrations (the SQL function ``ensure_log_maintenance_jobs`` schedules what is
missing, and only when the ``pg_cron`` extension is installed), and
``supabase-log doctor`` reports :func:`cron_status`. Both take a psycopg
connection string or connection (the ``[postgres]`` extra).
"""

from __future__ import annotations

from typing import Any

JOBS = {
    "supabase-log-reap-stale-runs": "select count(*) from public.reap_stale_runs()",
    "supabase-log-retention": "call public.run_log_retention()",
}
NO_CRON = (
    "pg_cron is not installed: stale runs are closed by `supabase-log check` and old rows removed "
    "by `supabase-log prune` only when you run them"
)
FIX_NO_CRON = (
    "enable the pg_cron extension (Supabase: Database -> Extensions) and run `supabase-log migrate` "
    "again, or run `supabase-log check` and `prune` from cron or CI"
)


def schedule_jobs(db_url: str) -> str:
    """Schedule the missing pg_cron jobs; one line saying what happened."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True, connect_timeout=15) as conn:
        present = conn.execute(
            "select to_regprocedure('public.ensure_log_maintenance_jobs()') is not null"
        ).fetchone()
        if not present or not present[0]:
            return "pg_cron: the watch migration is not applied; nothing scheduled"
        row = conn.execute("select public.ensure_log_maintenance_jobs()").fetchone()
    scheduled = row[0] if row else None
    if scheduled is None:
        return f"pg_cron: not installed, nothing scheduled ({FIX_NO_CRON})"
    if scheduled:
        return f"pg_cron: scheduled {', '.join(scheduled)}"
    return f"pg_cron: {', '.join(JOBS)} scheduled"


def cron_status(conn: Any) -> tuple[bool | None, str, str | None]:
    """(ok, detail, fix) for doctor: None when pg_cron is absent (nothing to check)."""
    installed = conn.execute(
        "select exists (select 1 from pg_extension where extname = 'pg_cron')"
    ).fetchone()
    if not installed or not installed[0]:
        return None, NO_CRON, FIX_NO_CRON
    rows = conn.execute(
        "select jobname, schedule, active from cron.job where jobname = any(%s)", (list(JOBS),)
    ).fetchall()
    found = {name: (schedule, active) for name, schedule, active in rows}
    missing = [name for name in JOBS if name not in found]
    if missing:
        return (
            False,
            f"pg_cron is installed but not running: {', '.join(missing)}",
            ("run `supabase-log migrate` (it schedules them)"),
        )
    inactive = [name for name, (_, active) in found.items() if not active]
    if inactive:
        return (
            False,
            f"pg_cron jobs are paused: {', '.join(inactive)}",
            (
                "select cron.alter_job(jobid, active => true) from cron.job where jobname like 'supabase-log-%';"
            ),
        )
    detail = "; ".join(f"{name} at '{found[name][0]}'" for name in JOBS)
    return True, f"pg_cron runs {detail}", None
