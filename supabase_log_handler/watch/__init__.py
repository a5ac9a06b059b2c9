"""Watching the jobs: schedules, the ``check`` evaluation, alerts, retention and digests.

Everything here runs outside the logging path (the CLI, or a job that has
finished), so none of it can slow a job down. Data flow::

    job_schedules + runs --store.py--> evaluate.py (pure: states and problems)
        --check.py--> claim_job_incident (one alert per problem) --alerts.py--> channels.py
    retention.py: prune_logs / prune_runs; digest.py: the daily summary

The SQL side (tables, functions, views, pg_cron jobs) is the migration
``20261201110000_watch_jobs.sql``. Submodules import their third-party
libraries (``cronsim``, the ``supabase`` client) only when called.
"""

from __future__ import annotations

from .alerts import notify_run_failed
from .schedules import Schedule, declare_schedule, declare_schedule_in_background

__all__ = ["Schedule", "declare_schedule", "declare_schedule_in_background", "notify_run_failed"]
