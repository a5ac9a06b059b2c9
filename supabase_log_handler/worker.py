"""The worker thread: from queue items to batches.

It wakes when a batch is full, when a record of level ERROR or a flush arrives,
and at least every ``flush_interval_s``. It turns snapshots into rows (ids,
JSON, redaction: the work that must not happen on the caller's thread), groups
them into batches bounded by rows, bytes and age, and hands each to the sender.
While the sender is busy or the breaker is open it keeps memory bounded by moving
batches to the spool, and when rows had to be shed it writes one WARNING row
saying how many, once the pressure is gone.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from typing import Any

from . import context
from .diagnostics import Diagnostics
from .queue import Item, RecordQueue
from .rows import RowBuilder, Snapshot, iso_timestamp
from .sender import Batch, Sender
from .spool import Entry, Spool, SpoolFullError
from .stats import Stats

SPILL_PRESSURE = 0.5  # spool queued rows while the sender is busy and the queue is this full


class Worker:
    """Batches queue items for the sender; see the module docstring."""

    def __init__(
        self,
        *,
        record_queue: RecordQueue,
        builder: RowBuilder,
        sender: Sender,
        spool: Spool | None,
        stats: Stats,
        diagnostics: Diagnostics,
        logs_table: str,
        runs_table: str,
        flush_interval_s: float,
        max_batch_rows: int,
        max_batch_bytes: int,
        write_ahead: bool,
    ) -> None:
        self.queue = record_queue
        self.builder = builder
        self.sender = sender
        self.spool = spool
        self.stats = stats
        self.diag = diagnostics
        self.logs_table = logs_table
        self.runs_table = runs_table
        self.flush_interval_s = flush_interval_s
        self.max_batch_rows = max_batch_rows
        self.max_batch_bytes = max_batch_bytes
        self.write_ahead = write_ahead and spool is not None
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.hurry = False  # flush() or an ERROR record: send what there is now
        self.inline = False  # no threads (interpreter shutdown): deliver on the calling thread
        self.current: Batch | None = None

    # -- thread ------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            self.pump()
            if self.stop.is_set() and self.queue.rows == 0 and self.current is None:
                return
            timeout = self.flush_interval_s
            if self.current is not None:
                timeout = max(
                    self.flush_interval_s - (time.monotonic() - self.current.started), 0.0
                )
            self.wake.wait(timeout if not self.stop.is_set() else 0.05)
            self.wake.clear()

    def pump(self) -> None:
        """Move everything currently queued into batches and hand them on. Never raises."""
        try:
            while True:
                batch = self.current or Batch()
                self.current = batch
                room_rows = self.max_batch_rows - batch.rows
                room_bytes = self.max_batch_bytes - batch.nbytes
                if room_rows > 0 and room_bytes > 0:
                    token, items = self.queue.take(room_rows, room_bytes)
                    if items:
                        batch.tokens.append(token)
                        entries, raw = self._split(items)
                        if self.write_ahead:
                            entries = self._write_ahead(entries + self.build_logs(raw))
                            raw = []
                        batch.entries.extend(entries)
                        batch.raw.extend(raw)
                        batch.nbytes += sum(i[1] for i in items)
                if not batch.rows:
                    self.current = None
                    if batch.tokens:
                        self.queue.done(*batch.tokens)
                    if self._report_drops():
                        continue  # send the report in this same round
                    self.hurry = False
                    return
                full = batch.rows >= self.max_batch_rows or batch.nbytes >= self.max_batch_bytes
                aged = time.monotonic() - batch.started >= self.flush_interval_s
                if not (full or aged or self.hurry or self.stop.is_set()):
                    return
                self.current = None
                self._dispatch(batch)
                if self.queue.rows == 0 and not self._report_drops():
                    self.hurry = False
                    return
        except Exception as exc:  # never let a bug stop the worker
            self.diag.report("worker-bug", f"unexpected error in worker: {exc!r}")

    def _split(self, items: list[Item]) -> tuple[list[Entry], list[tuple[Any, ...]]]:
        """Run states as entries; log snapshots left raw (rows are built when sent)."""
        entries: list[Entry] = []
        raw: list[tuple[Any, ...]] = []
        for item in items:
            kind = item[3]
            if kind == "log":
                raw.append(item[4:])
                continue
            data = item[4]
            if kind == "run_open":  # data is the Run: read it now, skip it if it was cancelled
                row = data.open_row()
                if row is not None:
                    if row.get("metadata"):
                        row["metadata"] = self.builder.redactor.value(row["metadata"])
                    entries.append(Entry(kind, self.runs_table, row))
            else:
                entries.append(Entry(kind, self.runs_table, data))
        self.stats.add("enqueued", len(raw))
        return entries, raw

    def entries_of(self, items: list[Item]) -> list[Entry]:
        """Every item as a ready entry (for the spool)."""
        entries, raw = self._split(items)
        return entries + self.build_logs(raw)

    def build_logs(self, raw: list[tuple[Any, ...]]) -> list[Entry]:
        """Rows for log snapshots; never raises.

        Every 64 rows it lets go of the interpreter for a moment, so a big batch
        never keeps the job's own threads waiting for more than a slice.
        """
        out = []
        for i, data in enumerate(raw):
            if i and not i % 64:
                time.sleep(0)
            snap = Snapshot._make(data)
            try:
                row = self.builder.build(snap)
            except Exception as exc:  # the builder never raises; this is belt and braces
                row = self._fallback_row(snap, exc)
            out.append(Entry("log", self.logs_table, row))
        return out

    def _fallback_row(self, snap: Snapshot, exc: Exception) -> dict[str, Any]:
        from ._ids import new_id

        return {
            "id": new_id(),
            "run_id": snap.run_id,
            "timestamp": iso_timestamp(snap.created),
            "level": "ERROR",
            "step": self.builder.default_step,
            "message": "a log record could not be converted",
            "meta": {"error": repr(exc)[:1000]},
        }

    # -- handing on --------------------------------------------------------------------
    def _write_ahead(self, entries: list[Entry]) -> list[Entry]:
        """With durability="disk": on disk (leased to this process) before any send."""
        if not self.write_ahead or self.spool is None or not entries:
            return entries
        try:
            seqs = self.spool.add(entries, leased=True)
            if len(seqs) == len(entries):
                return self.sender.with_seqs(entries, seqs)
        except Exception as exc:
            self.diag.report("spool", f"cannot write ahead to the spool: {exc!r}")
        return entries

    def _dispatch(self, batch: Batch) -> None:
        if self.inline:
            self.sender.deliver(batch)
            return
        while True:
            if (
                self.sender.breaker.is_open
                and self.spool is not None
                and not self.sender.breaker.probe_due()
            ):
                self._spool_batch(batch)
                return
            try:
                self.sender.handoff.put(batch, timeout=0.05)
                return
            except queue_mod.Full:
                pass
            if self.sender.abort.is_set():
                self._spool_batch(batch)
                return
            if self.spool is not None and self.queue.pressure() >= SPILL_PRESSURE:
                self._spill()

    def _spool_batch(self, batch: Batch) -> None:
        """Keep a batch in the spool instead of sending it now."""
        self.sender.park_batch(batch, self.sender.breaker.reason or "backend busy")
        self.queue.done(*batch.tokens)

    def _spill(self) -> None:
        """Move queued rows to the spool while the sender is busy (small chunks: see park_batch)."""
        while self.queue.pressure() >= SPILL_PRESSURE / 2:
            token, items = self.queue.take(64, self.max_batch_bytes)
            if not items:
                return
            entries = self.entries_of(items)
            try:
                assert self.spool is not None
                self.spool.add(entries)
                self.stats.add("spooled", len(entries))
                self.sender.spool_dirty = True
            except (SpoolFullError, Exception) as exc:
                for e in entries:
                    self.queue.count_dropped(_levelno(e))
                self.diag.report("spool-full", f"{len(entries)} rows dropped: {exc}")
            finally:
                self.queue.done(token)

    def _report_drops(self) -> bool:
        """Queue one WARNING row "N records dropped" once pressure is low; True if it did."""
        if not self.queue.report_pending():
            return False
        run_id = self.queue.last_drop_run
        if run_id is None:
            current = context.current_run()
            run_id = current.id if current is not None else None
        if run_id is None:
            return False
        thread = threading.current_thread().name

        def row(n: int, totals: dict[str, int]) -> tuple[Any, ...]:
            snap = Snapshot(
                created=time.time(),
                levelno=logging.WARNING,
                levelname="WARNING",
                message=f"{n} records dropped",
                logger="supabase_log_handler",
                pathname="",
                lineno=0,
                func=None,
                thread=thread,
                process=None,
                exc=None,
                run_id=run_id,
                step=None,
                extras={"meta": {"dropped": n, "dropped_by_level": totals}},
            )
            return ("log", *snap)

        return self.queue.put_drop_report(row, 512)


def _levelno(entry: Entry) -> int:
    if entry.kind != "log":
        return 1_000
    return (
        int(logging.getLevelName(str(entry.row.get("level", "INFO"))))
        if entry.row.get("level")
        else logging.INFO
    )
