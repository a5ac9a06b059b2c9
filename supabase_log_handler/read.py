"""Reading runs and logs back: what incremental syncs and the terminal views need.

These calls run on the caller's thread and do network I/O (they are explicit
reads, not logging). They use the same settings as the handler, so they read
Supabase when ``SUPABASE_URL`` is set and the local store otherwise.
"""

from __future__ import annotations

import threading
from typing import Any

from .config import Settings, load_settings
from .sinks import Filter, Sink

_cache: dict[tuple[Any, ...], Sink] = {}
_lock = threading.Lock()


def reader(settings: Settings | None = None, **overrides: Any) -> tuple[Sink, Settings]:
    """A sink for reading (cached per target and thread), with the settings it used."""
    s = settings or load_settings(overrides)
    key = (s.uses_supabase, s.url, s.schema, str(s.resolved_local_path), threading.get_ident())
    with _lock:
        sink = _cache.get(key)
        if sink is None:
            from .sinks.factory import make_sink

            sink = _cache[key] = make_sink(s)
    return sink, s


def get_run(run_id: str, **settings: Any) -> dict[str, Any] | None:
    """The ``runs`` row with this id, or None."""
    sink, s = reader(**settings)
    rows = sink.select(s.runs_table, filters=[("id", "eq", run_id)], limit=1)
    return rows[0] if rows else None


def get_logs(
    run_id: str,
    *,
    level: str | None = None,
    step: str | None = None,
    limit: int = 10_000,
    **settings: Any,
) -> list[dict[str, Any]]:
    """The run's ``logs`` rows in order (timestamp, then id), optionally one level or step."""
    sink, s = reader(**settings)
    filters: list[Filter] = [("run_id", "eq", run_id)]
    if level:
        filters.append(("level", "eq", level.upper()))
    if step:
        filters.append(("step", "eq", step))
    return sink.select(
        s.logs_table, filters=filters, order=[("timestamp", False), ("id", False)], limit=limit
    )


def last_successful_run(script_name: str, **settings: Any) -> dict[str, Any] | None:
    """The newest successful run of ``script_name``; its ``sync_end_date`` starts the next incremental sync."""
    sink, s = reader(**settings)
    rows = sink.select(
        s.runs_table,
        filters=[
            ("script_name", "eq", script_name),
            ("status", "eq", "success"),
            ("finished_at", "not_null", None),  # descending order puts NULLs first in PostgreSQL
        ],
        order=[("finished_at", True)],
        limit=1,
    )
    return rows[0] if rows else None
