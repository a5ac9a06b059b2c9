"""``supabase-log digest``: a summary of recent runs, sent to the alert channels.

Owns the digest's text; the numbers come from ``watch.summary`` (the same as
``stats``), the sending from ``watch.alerts``. Reads Supabase or the local store.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from ..errors import ConfigurationError
from ..sinks import Filter
from ..watch.alerts import deliver, redactor_for
from ..watch.channels import Message, load_channels
from ..watch.summary import summarize, totals
from ._common import (
    CommandError,
    iso,
    open_reader,
    parse_since,
    select_all,
    show_duration,
    show_time,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "digest",
        help="send a summary of recent runs",
        description="Runs, failures, durations and cost per job over --since, sent to "
        "every configured alert channel (run it daily).",
    )
    p.add_argument("--since", default="24h", help="period covered (default 24h)")
    p.add_argument(
        "--print", dest="print_only", action="store_true", help="print the message, send nothing"
    )
    p.set_defaults(func=cmd_digest)


# -- digest --------------------------------------------------------------------------------
def digest_message(
    summary: dict[str, dict[str, Any]], since: dt.datetime, until: dt.datetime
) -> Message:
    all_ = totals(summary)
    lines = [
        f"{show_time(iso(since))} - {show_time(iso(until))} UTC: {all_['runs']} runs, "
        f"{all_['failed']} failed, API cost {all_['api_cost']:g}"
    ]
    for name, st in summary.items():
        lines.append(
            f"- {name}: {st['total']} runs, {st['failed']} failed"
            + (f" ({st['success_rate']:g}% ok)" if st["success_rate"] is not None else "")
            + f", p50 {show_duration(st['p50_duration_ms']) or '-'}, p95 {show_duration(st['p95_duration_ms']) or '-'}"
            + f", max {show_duration(st['max_duration_ms']) or '-'}, cost {st['api_cost']:g}"
        )
    if not summary:
        lines.append("no runs")
    subject = f"Job digest: {all_['runs']} runs, {all_['failed']} failed"
    return Message(
        subject,
        "\n".join(lines),
        {
            "event": "digest",
            "since": iso(since),
            "until": iso(until),
            "jobs": summary,
            "totals": all_,
        },
    )


def cmd_digest(args: argparse.Namespace) -> int:
    until = dt.datetime.now(dt.timezone.utc)
    since = parse_since(args.since, now=until)
    sink, s = open_reader(args.env_file, quiet=True)
    try:
        filters: list[Filter] = [("started_at", "gte", iso(since))]
        runs = select_all(sink, s.runs_table, filters, key="started_at")
    finally:
        sink.close()
    message = digest_message(summarize(runs), since, until)
    if args.print_only:
        print(message.subject)
        print(message.text)
        return 0
    try:
        channels = load_channels(env_file=args.env_file)
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    if not channels:
        raise CommandError(
            "no alert channel is configured (see docs/watching.md, Alerts); "
            "`digest --print` shows the message"
        )
    outcome = deliver(
        message, list(channels.values()), deadline_s=30.0, redactor=redactor_for(channels)
    )
    print(f"digest sent to {', '.join(outcome.sent) or 'no channel'}")
    for failure in outcome.failed + [f"{n}: timed out" for n in outcome.timed_out]:
        print(f"not sent: {failure}")
    return 0 if outcome.ok else 1
