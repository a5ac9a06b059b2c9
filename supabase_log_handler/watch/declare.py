"""Declaring a job's schedule from its own code: ``declare_schedule`` (one request, on the
caller's thread) and ``declare_schedule_in_background`` (for ``start_run(schedule=...)``).
The store and the alert channels are imported when a schedule is declared: importing the
package stays cheap."""

from __future__ import annotations

import threading
from typing import Any

from .._threads import start_without_signals, without_signals
from .schedules import DEFAULT_GRACE_S, Schedule


def declare_schedule(
    script_name: str,
    cron: str | None = None,
    *,
    interval_s: float | None = None,
    tz: str | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    max_runtime_s: float | None = None,
    min_runtime_s: float | None = None,
    channels: list[str] | tuple[str, ...] | None = None,
    enabled: bool = True,
    declared_in: str = "code",
    **settings: Any,
) -> str:
    """Create or update the schedule of ``script_name`` in Supabase; returns
    ``created``, ``updated`` or ``unchanged``.

    Runs on the caller's thread and does one request. ConfigurationError for a bad
    expression, time zone or duration, or when Supabase is not configured (the
    local store keeps no schedules); DeliveryError when the request fails.
    ``settings`` are the handler's settings (``url``, ``key``, ...), read from the
    environment when not given.
    """
    schedule = Schedule(
        script_name=script_name,
        cron=cron,
        interval_s=None if interval_s is None else round(interval_s),
        timezone=tz or "UTC",
        grace_s=round(grace_s),
        max_runtime_s=None if max_runtime_s is None else round(max_runtime_s),
        min_runtime_s=None if min_runtime_s is None else round(min_runtime_s),
        channels=tuple(channels) if channels is not None else None,
        enabled=enabled,
        declared_in=declared_in,
    ).validated()
    from .store import WatchDb

    db = WatchDb.from_settings(**settings)
    try:
        return db.declare_schedule(schedule)
    finally:
        db.close()


_declared: dict[tuple[Any, ...], str] = {}
_declared_lock = threading.Lock()


def declare_schedule_in_background(
    script_name: str, cron: str | None = None, **kwargs: Any
) -> threading.Thread | None:
    """``declare_schedule`` on a daemon thread, once per process for the same arguments.

    For ``start_run(..., schedule=...)``: returns at once (None when these arguments
    were already declared by this process) and never raises; a failure is one
    note on stderr. The caller may ``join`` the thread with a deadline.
    """
    key = (script_name, cron, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    with _declared_lock:
        if key in _declared:
            return None
        _declared[key] = "pending"

    def work() -> None:
        try:
            outcome = declare_schedule(script_name, cron, **kwargs)
        except Exception as exc:
            from .alerts import diagnostics

            outcome = "failed"
            diagnostics.report(
                "schedule", f"could not declare the schedule of {script_name!r}: {exc}"
            )
        with _declared_lock:
            if outcome == "failed":
                _declared.pop(key, None)  # try again on the next run of the job
            else:
                _declared[key] = outcome

    thread = threading.Thread(target=without_signals(work), name="supabase-log-schedule", daemon=True)
    start_without_signals(thread)
    return thread
