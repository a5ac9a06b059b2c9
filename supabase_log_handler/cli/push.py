"""``supabase-log push``: send the spool and the local store to Supabase, exactly once.

Owns the upload. The spool is replayed with the handler's own sender logic: each
segment nobody holds is taken (its lock is this process's while it sends) and
sent in chunks, its progress written after each one, so concurrent pushes and
jobs never send one row twice at once (and ids make a repeat harmless). The
local store is uploaded runs first (each run's full row, merged by id), then
log rows in chunks (ignored when their id is already there), then integration
calls (merged by id: a call's latest state wins), and every uploaded row is
marked pushed. Rows Supabase refuses are isolated, reported and left
unpushed (local store) or kept as dead letters (spool). ``--dead-letters`` sends
the dead letters again (after a migration or a fix): each file no running
process writes is taken, and keeps only the rows refused again.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from .._jsonsafe import encode
from ..config import Settings
from ..delivery import Deliverer
from ..diagnostics import Diagnostics
from ..errors import DeliveryError
from ..ledger import Ledger
from ..local_integration import CALL_COLUMNS
from ..queue import Intake
from ..retry import Breaker
from ..rows import ALIVE, INSERT, MERGE, Entry
from ..sender import Sender
from ..sinks.factory import make_sink
from ..sinks.local import LOG_COLUMNS, RUN_COLUMNS, LocalSink
from ..spool import Spool
from ..spool_files import pending_segments, read_dead_letters, resend_dead_letters
from ._common import CommandError, emit_json, note, settings

CHUNK = 500


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "push",
        help="upload the spool and the local store to Supabase",
        description="Send what the spool holds and what the local store recorded to Supabase; safe to repeat.",
    )
    p.add_argument("--json", action="store_true", help="print the counts as a JSON object")
    p.add_argument(
        "--dead-letters",
        action="store_true",
        help="also send again the rows kept as dead letters (after `migrate` or a fix)",
    )
    p.set_defaults(func=cmd_push)


def _deliverer(s: Settings, sink_factory: Any = None) -> Deliverer:
    return Deliverer(
        sink_factory=sink_factory or (lambda: make_sink(s)),
        breaker=Breaker(probe_interval_s=s.probe_interval_s),
        runs_table=s.runs_table,
        logs_table=s.logs_table,
        retry_deadline_s=s.retry_deadline_s,
        retry_max_wait_s=s.retry_max_wait_s,
        run_row=lambda run_id: None,
    )


def replayer(s: Settings, diagnostics: Diagnostics | None = None) -> Sender:
    """A sender with no thread and no queue, that only replays the spool of ``s``."""
    intake = Intake(max_rows=1, max_bytes=1)
    return Sender(
        ledger=Ledger(intake, runs_table=s.runs_table, logs_table=s.logs_table),
        deliverer=_deliverer(s),
        spool=Spool(s.resolved_spool_path, max_bytes=s.max_spool_bytes, destination=s.destination,
                    runs_table=s.runs_table),
        diagnostics=diagnostics or Diagnostics(interval_s=3600.0),
        run_row=lambda run_id: None,
        wake_worker=lambda: None,
        counters=Counter(),
        replay_rows=s.max_batch_rows,
        replay_bytes=s.max_batch_bytes,
    )


def push_spool(s: Settings) -> tuple[int, int, str | None]:
    """Replay the spool until it is empty or Supabase fails: (sent, segments left, error)."""
    if not s.resolved_spool_path.is_dir():
        return 0, 0, None
    diag = Diagnostics(interval_s=3600.0, enabled=False)
    sender = replayer(s, diag)
    sent = 0
    try:
        while True:
            n = sender.replay_once(foreign=True)
            if n == 0:
                break
            sent += n
    finally:
        sender.deliverer.close()
        if sender.spool is not None:
            sender.spool.close()
    left = len(pending_segments(s.resolved_spool_path, s.destination))
    return sent, left, diag.last_error if left else None


def push_local(s: Settings) -> dict[str, Any]:
    """Upload the local store's unpushed runs, then logs, then calls; mark them pushed."""
    path = s.resolved_local_path
    counts: dict[str, Any] = {"runs": 0, "logs": 0, "calls": 0, "refused": []}
    if not path.exists():
        return counts
    local = LocalSink(path, runs_table=s.runs_table, logs_table=s.logs_table,
                      integration_logs_table=s.integration_logs_table)  # fmt: skip
    deliverer = _deliverer(s)
    refused: list[tuple[str, str]] = []
    try:
        tables = ((s.runs_table, True, "runs"), (s.logs_table, False, "logs"),
                  (s.integration_logs_table, True, "calls"))  # fmt: skip
        for table, merge, key in tables:
            skip: set[str] = set()
            while True:
                rows = [r for r in local.unpushed(table, CHUNK + len(skip)) if str(r["id"]) not in skip]
                if not rows:
                    break
                known = {s.runs_table: RUN_COLUMNS, s.logs_table: LOG_COLUMNS}.get(table, CALL_COLUMNS)
                entries: list[Entry] = [
                    (0, table, merge, str(r["id"]), r.get("run_id") if table != s.runs_table else None,
                     1000, encode({k: v for k, v in r.items() if k in known or v is not None}))
                    for r in rows
                ]
                outcome = deliverer.deliver(entries)
                if outcome.error is not None:
                    raise outcome.error
                for entry, error in outcome.dead:
                    refused.append((entry[3], str(error)))
                    skip.add(entry[3])
                stored = [e[3] for e in outcome.delivered]
                local.mark_pushed(table, stored)
                counts[key] += len(stored)
    finally:
        deliverer.close()
        local.close()
    counts["refused"] = [{"id": i, "error": e} for i, e in refused]
    return counts


def push_dead_letters(s: Settings) -> tuple[int, int, int]:
    """Send the spool's dead letters again: (sent, refused again, files busy)."""
    deliverer = _deliverer(s)

    def send(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entries: list[Entry] = []
        kept: dict[int, dict[str, Any]] = {}
        for rec in records:
            row, table = rec.get("row"), rec.get("table")
            if not isinstance(row, dict) or not isinstance(table, str):
                continue  # not a record this project wrote
            mode = rec.get("mode", MERGE if table != s.logs_table else INSERT)
            if mode == ALIVE:
                continue  # a heartbeat: the run's later rows say more
            entry = (0, table, mode, str(row.get("id") or ""),
                     row.get("run_id") if table != s.runs_table else None, 1000, encode(row))  # fmt: skip
            kept[id(entry)] = rec
            entries.append(entry)
        outcome = deliverer.deliver(entries)
        if outcome.error is not None:
            raise outcome.error
        return [{**kept[id(e)], "code": err.code, "error": str(err)[:2000]} for e, err in outcome.dead]

    try:
        return resend_dead_letters(s.resolved_spool_path, s.destination, send)
    finally:
        deliverer.close()


def cmd_push(args: argparse.Namespace) -> int:
    s = settings(args.env_file)
    if not s.uses_supabase:
        raise CommandError("set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY to push to Supabase")
    try:
        spooled, pending, spool_error = push_spool(s)
        local = push_local(s)
        resent, refused_again, busy = push_dead_letters(s) if args.dead_letters else (0, 0, 0)
    except DeliveryError as exc:
        fix = getattr(exc, "fix", None)
        raise CommandError(
            f"push stopped: {exc}"
            + (f"; to fix: {fix}" if fix else "")
            + " (run it again: nothing is sent twice)",
            code=1,
        ) from None
    dead = read_dead_letters(s.resolved_spool_path, s.destination)
    result = {
        "spool_delivered": spooled,
        "spool_pending": pending,
        "dead_letters": len(dead),
        "dead_letters_resent": resent,
        "dead_letters_busy_files": busy,
        "runs": local["runs"],
        "logs": local["logs"],
        "calls": local["calls"],
        "refused": local["refused"],
        "local_store": str(s.resolved_local_path),
        "spool": str(s.resolved_spool_path),
    }
    if args.json:
        emit_json(result)
    else:
        print(
            f"pushed {local['runs']} run(s), {local['logs']} log row(s) and {local['calls']} call(s) "
            f"from the local store {s.resolved_local_path}; "
            f"{spooled} spooled entr{'y' if spooled == 1 else 'ies'} delivered"
        )
        for item in local["refused"]:
            note(f"Supabase refused row {item['id']}: {item['error']} (left in the local store)")
        if pending:
            note(
                f"{pending} spool segment(s) still pending: {spool_error or 'Supabase did not accept them, or another process holds them'}"
            )
        if args.dead_letters:
            print(f"{resent} dead letter(s) sent again, {refused_again} refused again")
        if busy:
            note(f"{busy} dead-letter file(s) skipped: a running process writes them")
        if dead:
            hint = "" if args.dead_letters else "; `supabase-log push --dead-letters` sends them again"
            note(f"{len(dead)} dead letter(s) kept in {s.resolved_spool_path} (*.dead): rows the database refused{hint}")
    return 1 if pending or local["refused"] else 0
