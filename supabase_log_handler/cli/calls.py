"""``supabase-log calls`` and ``calls stats``: the external API calls jobs recorded.

Owns what the two views select from ``integration_logs`` and how they are shown.
``calls`` lists the table's rows, newest first, filtered by service, action, status,
time, run or related record; ``calls stats`` reads the ``integration_stats_hourly`` or
``integration_stats_daily`` view. Both read through ``Sink.select`` (as views.py does),
so Supabase and the local store are read the same way; on the local store the table
and views are created first when missing (``local_integration.ensure_schema``).
Tables are for people (UTC times, aligned columns); ``--json`` writes the rows as a
JSON array, payloads as JSON values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from ..local_integration import STATUSES, TABLE, ensure_schema, stats_views
from ..sinks import Filter, Sink
from ..sinks.local import JSON_COLUMNS as LOCAL_SINK_JSON_COLUMNS
from ..sinks.local import LocalSink
from ._common import (
    CommandError,
    emit_json,
    first_line,
    iso,
    open_reader,
    parse_since,
    parse_time,
    select_all,
    show_duration,
    show_time,
    table,
)

PAYLOAD_COLUMNS = ("request_payload", "response_payload")
VIEW_PAGE_ROWS = 1000  # PostgREST's usual cap on one answer (Supabase's default max rows)
_VIEW_ORDER = [("service_name", False), ("action", False), ("status", False)]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calls",
        help="recent external API calls (integration_logs)",
        description="Calls to external services recorded by jobs, newest first. "
        "`supabase-log calls stats` shows them per hour or per day.",
    )
    p.add_argument("--service", "-s", help="only calls to this service_name")
    p.add_argument("--action", "-a", help="only this action")
    p.add_argument("--status", choices=STATUSES, help="only calls with this status")
    p.add_argument("--since", help="only calls made since: 30m, 24h, 7d or an ISO date")
    p.add_argument("--run", "-r", metavar="RUN_ID", help="only calls made by this run")
    p.add_argument(
        "--entity",
        "-e",
        metavar="TYPE[:ID]",
        help="only calls about this record: lead, or lead:<uuid>",
    )
    p.add_argument(
        "--limit", "-n", type=int, default=50, help="at most this many calls (default 50)"
    )
    p.add_argument("--json", action="store_true", help="a JSON array of integration_logs rows")
    p.set_defaults(func=cmd_calls)

    views = p.add_subparsers(dest="calls_view", metavar="[stats]")
    s = views.add_parser(
        "stats",
        help="calls per hour or per day",
        description="Calls per service, action and status: per UTC hour over the current hour "
        "and the 23 before it (--hourly, the default), or per UTC day over today and the 29 "
        "days before (--daily).",
    )
    bucket = s.add_mutually_exclusive_group()
    bucket.add_argument(
        "--hourly",
        dest="bucket",
        action="store_const",
        const="hour",
        help="integration_stats_hourly (default)",
    )
    bucket.add_argument(
        "--daily", dest="bucket", action="store_const", const="day", help="integration_stats_daily"
    )
    # SUPPRESS: `calls --service X stats` keeps the X given before the word `stats`.
    s.add_argument(
        "--service", "-s", default=argparse.SUPPRESS, help="only calls to this service_name"
    )
    s.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="a JSON array of view rows"
    )
    s.set_defaults(func=cmd_stats, bucket="hour")


# -- reading -----------------------------------------------------------------------------
def open_calls_reader(env_file: str | None, *, quiet: bool) -> Sink:
    """The sink to read calls from; on the local store, the table and views exist afterwards."""
    sink, _ = open_reader(env_file, quiet=quiet)
    if isinstance(sink, LocalSink):
        try:
            prepare_local(sink.path)
        except BaseException:
            sink.close()
            raise
    return sink


def prepare_local(path: Path) -> None:
    """Create the calls table and its views in the local store file if missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=2.0, isolation_level=None)
        try:
            ensure_schema(conn, TABLE)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise CommandError(f"cannot open the local store {path}: {exc}", code=1) from None


def _decode_payloads(sink: Sink, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The local store keeps payloads as JSON text; give them back as JSON values."""
    if not isinstance(sink, LocalSink):
        return rows
    pending = [c for c in PAYLOAD_COLUMNS if c not in LOCAL_SINK_JSON_COLUMNS]
    for row in rows:
        for column in pending:
            value = row.get(column)
            if isinstance(value, str):
                with contextlib.suppress(ValueError):  # not JSON text: shown as stored
                    row[column] = json.loads(value)
    return rows


def _uuid_option(name: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CommandError(f"{name}: expected a uuid, got {value!r}") from None


def call_filters(
    *,
    service: str | None = None,
    action: str | None = None,
    status: str | None = None,
    since: str | None = None,
    run_id: str | None = None,
    entity: str | None = None,
) -> list[Filter]:
    """The ``Sink.select`` filters for the ``calls`` options."""
    filters: list[Filter] = []
    if service:
        filters.append(("service_name", "eq", service))
    if action:
        filters.append(("action", "eq", action))
    if status:
        filters.append(("status", "eq", status))
    if since:
        filters.append(("created_at", "gte", iso(parse_since(since))))
    if run_id:
        filters.append(("run_id", "eq", _uuid_option("--run", run_id)))
    if entity:
        kind, _, entity_id = entity.partition(":")
        if not kind:
            raise CommandError(f"--entity: expected TYPE or TYPE:ID, got {entity!r}")
        filters.append(("related_entity_type", "eq", kind))
        if entity_id:
            filters.append(("related_entity_id", "eq", _uuid_option("--entity", entity_id)))
    return filters


def query_calls(sink: Sink, filters: list[Filter], *, limit: int) -> list[dict[str, Any]]:
    """Matching calls, newest first (then by id), at most ``limit``."""
    rows = select_all(sink, TABLE, filters, key="created_at", max_rows=max(limit, 0))
    return _decode_payloads(sink, rows)


def query_stats(
    sink: Sink,
    bucket: str,
    *,
    service: str | None = None,
    page_rows: int = VIEW_PAGE_ROWS,
) -> list[dict[str, Any]]:
    """Every row of the hourly (``bucket="hour"``) or daily (``"day"``) view, newest bucket first.

    A view has no id to page on, so paging goes by bucket: of a full page, the buckets
    before its last are complete; the last one is read again whole, and the next page
    starts below it.
    """
    hourly, daily = stats_views(TABLE)
    view = {"hour": hourly, "day": daily}[bucket]
    base: list[Filter] = [("service_name", "eq", service)] if service else []
    order = [(bucket, True), *_VIEW_ORDER]
    out: list[dict[str, Any]] = []
    below: list[Filter] = []
    while True:
        rows = sink.select(view, filters=[*base, *below], order=order, limit=page_rows)
        if len(rows) < page_rows:
            return out + rows
        last = rows[-1][bucket]
        tail = sink.select(
            view, filters=[*base, (bucket, "eq", last)], order=order, limit=page_rows
        )
        if len(tail) >= page_rows:
            raise CommandError(
                f"{view} has {page_rows} or more rows in one {bucket}; narrow it with --service",
                code=1,
            )
        out += [r for r in rows if r[bucket] != last] + tail
        below = [(bucket, "lt", last)]


# -- commands ----------------------------------------------------------------------------
def _entity(row: dict[str, Any]) -> str:
    kind, entity_id = row.get("related_entity_type"), row.get("related_entity_id")
    if kind and entity_id:
        return f"{kind}:{entity_id}"
    return str(kind or entity_id or "")


def _error(row: dict[str, Any]) -> str:
    code, message = row.get("error_code"), first_line(row.get("error_message"), 80)
    if code and message:
        return f"{code}: {message}"
    return str(code or message or "")


def cmd_calls(args: argparse.Namespace) -> int:
    filters = call_filters(
        service=args.service,
        action=args.action,
        status=args.status,
        since=args.since,
        run_id=args.run,
        entity=args.entity,
    )
    sink = open_calls_reader(args.env_file, quiet=args.json)
    try:
        rows = query_calls(sink, filters, limit=args.limit)
    finally:
        sink.close()
    if args.json:
        emit_json(rows)
        return 0
    table(
        ("TIME (UTC)", "SERVICE", "ACTION", "STATUS", "DURATION", "RETRIES", "ENTITY", "ERROR"),
        (
            (
                show_time(r.get("created_at")),
                r.get("service_name"),
                r.get("action"),
                r.get("status"),
                show_duration(r.get("duration_ms")),
                r.get("retry_count"),
                _entity(r),
                _error(r),
            )
            for r in rows
        ),
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    sink = open_calls_reader(args.env_file, quiet=args.json)
    try:
        rows = query_stats(sink, args.bucket, service=args.service)
    finally:
        sink.close()
    if args.json:
        emit_json(rows)
        return 0
    hourly = args.bucket == "hour"
    headers = ["HOUR (UTC)" if hourly else "DAY (UTC)", "SERVICE", "ACTION", "STATUS"]
    headers += ["CALLS", "FAILED", "AVG DURATION"] + (["MAX DURATION"] if hourly else [])

    def cells(r: dict[str, Any]) -> list[Any]:
        when = parse_time(r.get(args.bucket))
        out = [
            when.strftime("%Y-%m-%d %H:%M" if hourly else "%Y-%m-%d") if when else "",
            r.get("service_name"),
            r.get("action"),
            r.get("status"),
            r.get("count"),
            r.get("failed_count"),
            show_duration(r.get("avg_duration_ms")),
        ]
        return out + ([show_duration(r.get("max_duration_ms"))] if hourly else [])

    table(headers, (cells(r) for r in rows))
    return 0
