"""How values look on the pages: times (UTC), durations, costs, records, JSON, chart data.

Pure functions used as Jinja filters and by the routes. Nothing here marks text as
safe: every value goes through Jinja's autoescaping, so a log line is always text.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..cli._common import parse_time, show_duration, show_time

UTC = dt.timezone.utc
RECORD_KEYS = ("fetched", "inserted", "updated", "failed")

__all__ = [
    "chart_json",
    "cost",
    "elapsed_ms",
    "epoch_s",
    "log_time",
    "meta_json",
    "parse_time",
    "records",
    "show_duration",
    "show_time",
    "traceback_of",
]


def log_time(value: Any) -> str:
    """``2026-12-01 09:20:00.123`` (UTC, milliseconds)."""
    when = parse_time(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if when else ""


def epoch_s(value: Any) -> float | None:
    when = parse_time(value)
    return when.timestamp() if when else None


def elapsed_ms(start: Any, end: Any = None, *, now: dt.datetime | None = None) -> int | None:
    """Milliseconds from ``start`` to ``end`` (default: now)."""
    began = parse_time(start)
    if began is None:
        return None
    finished = parse_time(end) or now or dt.datetime.now(UTC)
    return max(0, int((finished - began).total_seconds() * 1000))


def cost(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        return f"{float(value):.4f}".rstrip("0").rstrip(".")
    except (TypeError, ValueError):
        return str(value)


def records(run: dict[str, Any]) -> str:
    """``120 fetched · 118 inserted · 2 failed``: the metrics that were set."""
    parts = [
        f"{run[f'records_{k}']} {k}" for k in RECORD_KEYS if run.get(f"records_{k}") is not None
    ]
    return " · ".join(parts)


def meta_json(value: Any) -> str:
    """A meta or payload value as indented JSON text, the traceback left out (shown apart)."""
    if value in (None, {}, ""):
        return ""
    if isinstance(value, dict) and isinstance(value.get("exception"), dict):
        exception = {k: v for k, v in value["exception"].items() if k != "traceback"}
        value = {**value, "exception": exception}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def traceback_of(meta: Any) -> str:
    if isinstance(meta, dict):
        exception = meta.get("exception")
        if isinstance(exception, dict) and exception.get("traceback"):
            return str(exception["traceback"])
    return ""


def chart_json(x: list[Any], series: list[dict[str, Any]], **options: Any) -> str:
    """The ``data-chart`` attribute: x values (epoch seconds) and named series of y values."""
    return json.dumps({"x": x, "series": series, **options}, separators=(",", ":"), default=str)
