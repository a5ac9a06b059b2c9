"""Chart data for the pages: rows in, ``data-chart`` JSON out (drawn by static/dashboard.js).

Each chart is an x axis of epoch seconds and named series of y values, ``null``
where there is nothing to show (a day without finished runs, an hour without
calls). Time buckets cover the whole window, so the axis shows the window even
where it is empty. Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .format import chart_json, epoch_s, parse_time

UTC = dt.timezone.utc
RECORD_SERIES = ("fetched", "inserted", "updated", "failed")


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def day_axis(since_day: dt.date, today: dt.date) -> list[dt.date]:
    return [since_day + dt.timedelta(days=i) for i in range((today - since_day).days + 1)]


def _midnight(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def script_charts(
    days: list[dict[str, Any]], runs: list[dict[str, Any]], since_day: dt.date, today: dt.date
) -> dict[str, str]:
    """Success rate and p50/p95 duration per day; records and API cost per run."""
    by_day: dict[dt.date, dict[str, Any]] = {}
    for row in days:
        when = parse_time(row.get("day"))
        if when is not None:
            by_day[when.date()] = row
    axis = day_axis(since_day, today)
    x = [_midnight(d) for d in axis]

    def per_day(column: str) -> list[float | None]:
        return [_number(by_day.get(d, {}).get(column)) for d in axis]

    run_x = [epoch_s(r.get("started_at")) for r in runs]
    records = [
        {"label": name, "values": [_number(r.get(f"records_{name}")) for r in runs]}
        for name in RECORD_SERIES
        if any(r.get(f"records_{name}") is not None for r in runs)
    ]
    return {
        "success": chart_json(
            x, [{"label": "success rate", "values": per_day("success_rate")}], unit="%", kind="bars"
        ),
        "duration": chart_json(
            x,
            [
                {"label": "p50", "values": per_day("p50_duration_ms")},
                {"label": "p95", "values": per_day("p95_duration_ms")},
            ],
            unit="ms",
        ),
        "records": chart_json(
            run_x, records or [{"label": "records", "values": [None] * len(runs)}], unit="rows"
        ),
        "cost": chart_json(
            run_x,
            [{"label": "API cost", "values": [_number(r.get("api_cost")) for r in runs]}],
            unit="cost",
        ),
    }


def bucket_axis(bucket: str, now: dt.datetime) -> list[dt.datetime]:
    """The view's window: the current UTC hour and the 23 before it, or today and 29 days."""
    now = now.astimezone(UTC)
    if bucket == "hour":
        top = now.replace(minute=0, second=0, microsecond=0)
        return [top - dt.timedelta(hours=23 - i) for i in range(24)]
    top = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [top - dt.timedelta(days=29 - i) for i in range(30)]


def call_charts(rows: list[dict[str, Any]], bucket: str, now: dt.datetime) -> dict[str, str]:
    """Calls, failures, average and (hourly) maximum duration per bucket, one series per
    service and action (statuses added up; the average weighted by calls)."""
    stamps = {t.timestamp() for t in bucket_axis(bucket, now)}
    groups: dict[str, dict[float, dict[str, float]]] = {}
    for row in rows:
        when = parse_time(row.get(bucket))
        if when is None:
            continue
        t = when.timestamp()
        stamps.add(t)
        key = f"{row.get('service_name')} · {row.get('action')}"
        cell = groups.setdefault(key, {}).setdefault(
            t, {"count": 0.0, "failed": 0.0, "timed": 0.0, "sum": 0.0, "max": -1.0}
        )
        count = _number(row.get("count")) or 0.0
        cell["count"] += count
        cell["failed"] += _number(row.get("failed_count")) or 0.0
        avg = _number(row.get("avg_duration_ms"))
        if avg is not None:
            cell["timed"] += count
            cell["sum"] += avg * count
        top = _number(row.get("max_duration_ms"))
        if top is not None:
            cell["max"] = max(cell["max"], top)
    x = sorted(stamps)
    names = sorted(groups)

    def series(pick: Any) -> list[dict[str, Any]]:
        return [{"label": n, "values": [pick(groups[n].get(t)) for t in x]} for n in names]

    charts = {
        "volume": chart_json(
            x, series(lambda c: c["count"] if c else 0), unit="calls", kind="bars"
        ),
        "failures": chart_json(x, series(lambda c: c["failed"] if c else 0), unit="calls"),
        "avg": chart_json(
            x,
            series(lambda c: round(c["sum"] / c["timed"]) if c and c["timed"] else None),
            unit="ms",
        ),
    }
    if bucket == "hour":
        charts["max"] = chart_json(
            x, series(lambda c: c["max"] if c and c["max"] >= 0 else None), unit="ms"
        )
    return charts
