"""Retention: delete logs and runs older than their windows, in short batches.

On Supabase through the SQL functions ``prune_logs`` and ``prune_runs`` (each
call deletes at most one batch in its own transaction, so no lock is held for
long; this module repeats the call until a batch comes back short). On the local
store the same windows apply to its SQLite file directly. Deleting a run deletes
its logs too (the foreign key cascades), whatever their age.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .schedules import iso_utc
from .store import WatchDb

LOGS_DAYS = 90  # the original documents: logs older than 90 days go
SUCCESS_RUNS_DAYS = 90  # successful runs go sooner ...
FAILED_RUNS_DAYS = 180  # ... than failed ones (as seed 003 does for integration logs)
LOG_BATCH_ROWS = 5000
RUN_BATCH_ROWS = 1000
MAX_BATCHES = 100_000


@dataclass(frozen=True)
class PruneResult:
    logs: int
    runs: int
    dry_run: bool
    store: str
    logs_before: str
    success_runs_before: str
    failed_runs_before: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Windows:
    logs_days: float = LOGS_DAYS
    success_runs_days: float = SUCCESS_RUNS_DAYS
    failed_runs_days: float = FAILED_RUNS_DAYS

    def cutoffs(self, as_of: dt.datetime) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
        day = dt.timedelta(days=1)
        return (
            as_of - self.logs_days * day,
            as_of - self.success_runs_days * day,
            as_of - self.failed_runs_days * day,
        )


def _result(
    store: str, logs: int, runs: int, dry_run: bool, windows: Windows, as_of: dt.datetime
) -> PruneResult:
    logs_cut, ok_cut, other_cut = windows.cutoffs(as_of)
    return PruneResult(
        logs, runs, dry_run, store, iso_utc(logs_cut), iso_utc(ok_cut), iso_utc(other_cut)
    )


def _repeat(call: Any, batch_rows: int) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        deleted = int(call())
        total += deleted
        if deleted < batch_rows:
            break
    return total


def prune_supabase(
    db: WatchDb, windows: Windows, *, dry_run: bool, as_of: dt.datetime
) -> PruneResult:
    """Logs first (a small cascade afterwards), then runs; counts of rows deleted (or due)."""
    when = iso_utc(as_of)
    logs_args = {
        "older_than_days": windows.logs_days,
        "max_rows": LOG_BATCH_ROWS,
        "dry_run": dry_run,
        "as_of": when,
    }
    runs_args = {
        "success_days": windows.success_runs_days,
        "failed_days": windows.failed_runs_days,
        "max_rows": RUN_BATCH_ROWS,
        "dry_run": dry_run,
        "as_of": when,
    }
    if dry_run:
        logs = db.prune_batch("prune_logs", logs_args)
        runs = db.prune_batch("prune_runs", runs_args)
    else:
        logs = _repeat(lambda: db.prune_batch("prune_logs", logs_args), LOG_BATCH_ROWS)
        runs = _repeat(lambda: db.prune_batch("prune_runs", runs_args), RUN_BATCH_ROWS)
    return _result("supabase", logs, runs, dry_run, windows, as_of)


def prune_local(
    path: Path,
    windows: Windows,
    *,
    dry_run: bool,
    as_of: dt.datetime,
    runs_table: str = "runs",
    logs_table: str = "logs",
) -> PruneResult:
    """The same windows on the local store's SQLite file (timestamps are stored as ISO text)."""
    logs_cut, ok_cut, other_cut = (iso_utc(t) for t in windows.cutoffs(as_of))
    if not path.exists():
        return _result(f"local:{path}", 0, 0, dry_run, windows, as_of)
    conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    try:
        conn.execute("pragma foreign_keys=on")
        logs_where = f"from {logs_table} where timestamp < ?"
        runs_where = (
            f"from {runs_table} where (status = 'success' and started_at < ?)"
            " or (status <> 'success' and started_at < ?)"
        )
        if dry_run:
            logs = conn.execute(f"select count(*) {logs_where}", (logs_cut,)).fetchone()[0]
            runs = conn.execute(f"select count(*) {runs_where}", (ok_cut, other_cut)).fetchone()[0]
        else:
            logs = _repeat(
                lambda: (
                    conn.execute(
                        f"delete from {logs_table} where rowid in (select rowid {logs_where} limit ?)",
                        (logs_cut, LOG_BATCH_ROWS),
                    ).rowcount
                ),
                LOG_BATCH_ROWS,
            )
            runs = _repeat(
                lambda: (
                    conn.execute(
                        f"delete from {runs_table} where rowid in (select rowid {runs_where} limit ?)",
                        (ok_cut, other_cut, RUN_BATCH_ROWS),
                    ).rowcount
                ),
                RUN_BATCH_ROWS,
            )
    finally:
        conn.close()
    return _result(f"local:{path}", int(logs), int(runs), dry_run, windows, as_of)
