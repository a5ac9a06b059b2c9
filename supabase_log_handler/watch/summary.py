"""Per-job summaries of runs rows: counts, success rate, duration percentiles, records, cost.

Pure functions over rows, so ``supabase-log stats`` and the daily digest give the
same numbers on Supabase and on the local store. Percentiles interpolate
linearly between the two nearest durations, as PostgreSQL's ``percentile_cont``
does in the ``run_stats_daily`` view.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .schedules import parse_ts

RECORDS = ("fetched", "inserted", "updated", "failed")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """``percentile_cont(fraction)`` of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def _ms(value: float | None) -> int | None:
    return None if value is None else round(value)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per script (sorted by name): totals, outcomes, durations, records, calls, cost, last run."""
    out: dict[str, dict[str, Any]] = {}
    durations: dict[str, list[float]] = {}
    for r in sorted(runs, key=lambda r: parse_ts(r.get("started_at")) or _EPOCH):
        name = str(r.get("script_name"))
        st = out.setdefault(
            name,
            {
                "total": 0,
                "succeeded": 0,
                "failed": 0,
                "running": 0,
                "avg_duration_ms": None,
                "records": dict.fromkeys(RECORDS, 0),
                "last_run": None,
                "success_rate": None,
                "p50_duration_ms": None,
                "p95_duration_ms": None,
                "max_duration_ms": None,
                "calls_analyzed": 0,
                "api_cost": 0.0,
            },
        )
        st["total"] += 1
        status = r.get("status")
        st[
            "succeeded" if status == "success" else "failed" if status == "error" else "running"
        ] += 1
        if r.get("duration_ms") is not None:
            durations.setdefault(name, []).append(float(r["duration_ms"]))
        for key in RECORDS:
            st["records"][key] += int(r.get(f"records_{key}") or 0)
        st["calls_analyzed"] += int(r.get("calls_analyzed") or 0)
        st["api_cost"] += float(r.get("api_cost") or 0)
        st["last_run"] = {
            "id": r.get("id"),
            "started_at": r.get("started_at"),
            "status": status,
            "duration_ms": r.get("duration_ms"),
        }
    for name, st in out.items():
        finished = st["succeeded"] + st["failed"]
        if finished:
            st["success_rate"] = round(100.0 * st["succeeded"] / finished, 1)
        st["api_cost"] = round(st["api_cost"], 6)
        values = sorted(durations.get(name, []))
        if values:
            st["avg_duration_ms"] = round(sum(values) / len(values))
            st["p50_duration_ms"] = _ms(percentile(values, 0.5))
            st["p95_duration_ms"] = _ms(percentile(values, 0.95))
            st["max_duration_ms"] = _ms(values[-1])
    return dict(sorted(out.items()))


def totals(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Runs, failures and cost over every script of a summary."""
    return {
        "runs": sum(s["total"] for s in summary.values()),
        "failed": sum(s["failed"] for s in summary.values()),
        "api_cost": round(sum(s["api_cost"] for s in summary.values()), 6),
    }
