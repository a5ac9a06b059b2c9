"""``supabase-log push``: send the spool and the local store to Supabase, exactly once.

Owns the upload. The spool is replayed with the handler's own ``Sender``
(``replay_once`` leases entries, so concurrent processes never send one twice).
The local store is uploaded runs first (each run's full row, merged by id), then
log rows in chunks (ignored when their id is already there), and every uploaded
row is marked pushed. Ids make a repeated or interrupted push harmless: nothing is
ever stored twice. Rows Supabase refuses are isolated, reported and left unpushed.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings
from ..diagnostics import Diagnostics
from ..errors import DataError, DeliveryError
from ..pipeline import make_sink
from ..queue import RecordQueue
from ..retry import Breaker
from ..sender import Sender
from ..sinks import Sink
from ..sinks.local import LocalSink
from ..spool import Spool
from ..stats import Stats
from ._common import CommandError, emit_json, note, settings

CHUNK = 500


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "push",
        help="upload the spool and the local store to Supabase",
        description="Send what the spool holds and what the local store recorded to Supabase; safe to repeat.",
    )
    p.add_argument("--json", action="store_true", help="print the counts as a JSON object")
    p.set_defaults(func=cmd_push)


def push_spool(s: Settings) -> tuple[int, int, str | None]:
    """Replay the spool until it is empty or Supabase fails: (delivered, still pending, error)."""
    path = s.resolved_spool_path
    if not path.exists():
        return 0, 0, None
    spool = Spool(path, max_bytes=s.max_spool_bytes, destination=s.destination)
    stats = Stats()
    diag = Diagnostics(interval_s=3600.0)
    sender = Sender(
        sink_factory=lambda: make_sink(s),
        build_logs=lambda raw: [],  # replay only sends rows that are already built
        spool=spool,
        record_queue=RecordQueue(max_rows=s.max_queue_rows, max_bytes=s.max_queue_bytes),
        breaker=Breaker(probe_interval_s=s.probe_interval_s),
        stats=stats,
        diagnostics=diag,
        runs_table=s.runs_table,
        retry_deadline_s=s.retry_deadline_s,
        retry_max_wait_s=s.retry_max_wait_s,
        replay_rows=s.max_batch_rows,
        lease_s=3 * s.request_timeout_s + s.retry_deadline_s,
    )
    delivered = 0
    try:
        while True:
            n = sender.replay_once()
            delivered += n
            if n == 0:
                break
        pending = spool.pending()
    finally:
        sender.close()
        spool.close()
    return delivered, pending, diag.last_error if pending else None


def _insert_isolating(
    remote: Sink, table: str, rows: list[dict[str, Any]], refused: list[tuple[str, str]]
) -> list[str]:
    """Insert rows; returns the ids stored. Refused rows are found by halving and reported."""
    try:
        remote.insert_rows(table, rows)
        return [str(r["id"]) for r in rows]
    except DataError as exc:
        if len(rows) == 1:
            refused.append((str(rows[0]["id"]), str(exc)))
            return []
    mid = len(rows) // 2
    return _insert_isolating(remote, table, rows[:mid], refused) + _insert_isolating(
        remote, table, rows[mid:], refused
    )


def push_local(s: Settings) -> dict[str, Any]:
    """Upload the local store's unpushed runs, then logs; mark them pushed."""
    path = s.resolved_local_path
    counts: dict[str, Any] = {"runs": 0, "logs": 0, "refused": []}
    if not path.exists():
        return counts
    local = LocalSink(path, runs_table=s.runs_table, logs_table=s.logs_table)
    remote = make_sink(s)
    refused: list[tuple[str, str]] = []
    try:
        skip: set[str] = set()
        while True:
            rows = [
                r
                for r in local.unpushed(s.runs_table, CHUNK + len(skip))
                if str(r["id"]) not in skip
            ]
            if not rows:
                break
            for row in rows:
                try:
                    remote.upsert_run(s.runs_table, row, final=True)
                except DataError as exc:
                    refused.append((str(row["id"]), str(exc)))
                    skip.add(str(row["id"]))
                    continue
                local.mark_pushed(s.runs_table, [str(row["id"])])
                counts["runs"] += 1
        skip = set()
        while True:
            rows = [
                r
                for r in local.unpushed(s.logs_table, CHUNK + len(skip))
                if str(r["id"]) not in skip
            ]
            if not rows:
                break
            before = len(refused)
            stored = _insert_isolating(remote, s.logs_table, rows, refused)
            skip.update(i for i, _ in refused[before:])
            local.mark_pushed(s.logs_table, stored)
            counts["logs"] += len(stored)
    finally:
        remote.close()
        local.close()
    counts["refused"] = [{"id": i, "error": e} for i, e in refused]
    return counts


def cmd_push(args: argparse.Namespace) -> int:
    s = settings(args.env_file)
    if not s.uses_supabase:
        raise CommandError("set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY to push to Supabase")
    try:
        spooled, pending, spool_error = push_spool(s)
        local = push_local(s)
    except DeliveryError as exc:
        fix = getattr(exc, "fix", None)
        raise CommandError(
            f"push stopped: {exc}"
            + (f"; to fix: {fix}" if fix else "")
            + " (run it again: nothing is sent twice)",
            code=1,
        ) from None
    result = {
        "spool_delivered": spooled,
        "spool_pending": pending,
        "runs": local["runs"],
        "logs": local["logs"],
        "refused": local["refused"],
        "local_store": str(s.resolved_local_path),
        "spool": str(s.resolved_spool_path),
    }
    if args.json:
        emit_json(result)
    else:
        print(
            f"pushed {local['runs']} run(s) and {local['logs']} log row(s) from the local store {s.resolved_local_path}; "
            f"{spooled} spooled entr{'y' if spooled == 1 else 'ies'} delivered"
        )
        for item in local["refused"]:
            note(f"Supabase refused row {item['id']}: {item['error']} (left in the local store)")
        if pending:
            note(
                f"{pending} spooled entries are still pending: {spool_error or 'Supabase did not accept them'}"
            )
    return 1 if pending or local["refused"] else 0
