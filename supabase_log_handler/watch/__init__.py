"""Watching the jobs: schedules, the ``check`` evaluation, alerts, retention and digests.

Everything here runs outside the logging path (the CLI, or a job that has
finished), so none of it can slow a job down. Data flow::

    job_schedules + runs --store.py--> evaluate.py (pure: states and problems)
        --check.py--> claim_job_incident (one alert per problem) --alerts.py--> channels.py
    retention.py: prune_logs / prune_runs; summary.py: stats and the daily digest;
    maintenance.py: the pg_cron jobs

The SQL side (tables, functions, views, pg_cron jobs) is the migration
``20261201110000_watch_jobs.sql``. Importing this package is cheap: submodules
import their third-party libraries (``cronsim``, the ``supabase`` client,
``smtplib``) only when called.
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from .declare import declare_schedule, declare_schedule_in_background
from .schedules import Schedule


def notify_run_failed(
    run_row: dict[str, Any],
    error_rows: list[dict[str, Any]],
    *,
    deadline_s: float,
    settings: Settings | None = None,
) -> None:
    """See :func:`supabase_log_handler.watch.alerts.notify_run_failed` (imported on first call)."""
    from .alerts import notify_run_failed as notify

    notify(run_row, error_rows, deadline_s=deadline_s, settings=settings)


__all__ = ["Schedule", "declare_schedule", "declare_schedule_in_background", "notify_run_failed"]
