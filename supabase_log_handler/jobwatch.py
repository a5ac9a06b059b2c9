"""The job's own side of watching: the schedule it declares, the alert its failure sends.

``start_run(..., schedule=...)`` declares the job's expected schedule in the
background (``watch/schedules.py``), once per process. A run that ends in error
alerts the configured channels (``watch/alerts.py``) from a daemon thread, with
the run's last ERROR rows; the exit drain waits for such alerts only as long as
its own deadline allows, so a hanging webhook never delays the exit past it.
Nothing here is imported by the logging path until a run asks for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from ._threads import start_without_signals, without_signals
from .diagnostics import Diagnostics

_alerts: list[threading.Thread] = []
_diag = Diagnostics()


def declare(script_name: str, schedule: str | Mapping[str, Any]) -> None:
    """Create or update the job's schedule row, on a daemon thread; never raises."""
    try:
        from .watch import declare_schedule_in_background

        options = {"cron": schedule} if isinstance(schedule, str) else dict(schedule)
        cron = options.pop("cron", None)
        declare_schedule_in_background(script_name, cron, **options)
    except Exception as exc:
        _diag.report("schedule", f"could not declare the schedule of {script_name!r}: {exc!r}")


def run_failed(run_row: dict[str, Any], errors: list[dict[str, Any]], settings: Any, deadline_s: float) -> None:
    """Alert the configured channels that a run failed, from a daemon thread; never raises."""

    def send() -> None:
        try:
            from .watch import notify_run_failed

            notify_run_failed(run_row, errors, deadline_s=deadline_s, settings=settings)
        except Exception as exc:
            _diag.report("alerts", f"failure alert not sent: {exc!r}")

    thread = threading.Thread(target=without_signals(send), name="supabase-log-alert", daemon=True)
    try:
        start_without_signals(thread)
    except RuntimeError:  # interpreter shutdown: no thread, and no time to wait for one
        return
    _alerts[:] = [t for t in _alerts if t.is_alive()] + [thread]


def wait_for_alerts(deadline: float) -> None:
    """Give alerts still being sent until ``deadline`` (monotonic); they go on as daemons after."""
    for thread in list(_alerts):
        thread.join(max(deadline - time.monotonic(), 0.0))
