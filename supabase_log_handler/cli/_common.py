"""Helpers every command shares: settings and sink, ``--since``, tables, JSON, times.

No command prints through ``logging`` (that could feed a handler); output goes to
stdout, notes and errors to stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from ..config import Settings, load_settings
from ..sinks import Filter, Sink
from ..sinks.factory import make_sink

UTC = dt.timezone.utc
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandError(Exception):
    """A command cannot go on; the message says why and what to do. Exit code 2 unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def settings(env_file: str | None) -> Settings:
    return load_settings({}, env_file=env_file)


def open_reader(env_file: str | None, *, quiet: bool = False) -> tuple[Sink, Settings]:
    """The sink the views read (Supabase when configured, else the local store)."""
    s = settings(env_file)
    if not s.uses_supabase and not quiet:
        note(f"reading the local store {s.resolved_local_path} (SUPABASE_URL is not set)")
    return make_sink(s), s


def note(message: str) -> None:
    print(f"supabase-log: {message}", file=sys.stderr, flush=True)


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` before now, or an ISO date/time."""
    now = now or dt.datetime.now(UTC)
    match = _SINCE.match(text)
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--since: expected 30m, 24h, 7d or an ISO date, got {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def iso(when: dt.datetime) -> str:
    """The form both stores compare correctly: UTC, microseconds, ``+00:00``."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00").replace(" ", "T", 1)
    # PostgREST may send fewer than 6 fractional digits, which Python 3.10 refuses.
    text = re.sub(r"\.(\d{1,6})\d*(?=[+-]|$)", lambda m: "." + m.group(1).ljust(6, "0"), text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def show_time(value: Any) -> str:
    when = parse_time(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if when else ""


def show_duration(ms: Any) -> str:
    if ms is None or ms == "":
        return ""
    ms = int(ms)
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def first_line(text: Any, width: int = 80) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    """Columns aligned with two spaces between them; the last column is not padded."""
    out = out or sys.stdout
    body = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, value in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(value))
    for row in [list(headers), *body]:
        cells = [value.ljust(widths[i]) for i, value in enumerate(row[:-1])] + [row[-1]]
        out.write("  ".join(cells).rstrip() + "\n")
    out.flush()


def emit_json(value: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
    out.flush()


def select_all(
    sink: Sink,
    table_name: str,
    filters: list[Filter],
    *,
    key: str,
    descending: bool = True,
    page: int = 1000,
    max_rows: int | None = None,
) -> list[dict[str, Any]]:
    """Every matching row ordered by (key, id), a page at a time (PostgREST caps one answer).

    Keyset paging on (key, id): after a page, first the rows that tie with its last
    key and come after its last id, then the rows beyond that key.
    """
    before = "lt" if descending else "gt"  # "comes after" in the chosen order
    order = [(key, descending), ("id", descending)]
    out: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None

    def full() -> bool:
        return max_rows is not None and len(out) >= max_rows

    while not full():
        if last is None:
            rows = sink.select(table_name, filters=filters, order=order, limit=page)
        else:
            rows = sink.select(
                table_name,
                filters=[*filters, (key, "eq", last[key]), ("id", before, last["id"])],
                order=order,
                limit=page,
            )
            if len(rows) < page and last[key] is not None:
                rows += sink.select(
                    table_name,
                    filters=[*filters, (key, before, last[key])],
                    order=order,
                    limit=page - len(rows),
                )
        out.extend(rows)
        if len(rows) < page:
            break
        last = rows[-1]
    return out[:max_rows] if max_rows is not None else out


def levels_from(minimum: str | None) -> list[str] | None:
    """``--level WARNING`` means WARNING and above."""
    if not minimum:
        return None
    name = minimum.upper()
    if name == "WARN":
        name = "WARNING"
    if name == "CRITICAL":
        name = "ERROR"
    if name not in LEVELS:
        raise CommandError(f"--level: expected one of {', '.join(LEVELS)}, got {minimum!r}")
    return list(LEVELS[LEVELS.index(name) :])
