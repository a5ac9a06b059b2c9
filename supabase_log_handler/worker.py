"""The worker thread: from the intake to batches, and from memory to the spool.

It wakes when nudged (a batch's worth queued, an ERROR record, a flush) and at
least every ``flush_interval_s``. It takes items into a ledger holding, builds
their rows (``rows.py``: ids, JSON, redaction, the work that must not happen on
the caller's thread) and offers the batch to the sender through the ledger's
slot once it is full, old enough, or hurried. While the sender is busy it keeps
memory bounded: when the queue is half full (or the breaker is open) a built
batch goes to the spool instead of waiting, to be replayed at the sink's speed.
With ``durability="disk"`` every batch is written to the spool first and the
sender delivers from there. It also writes what callers built themselves under
overload, and, once the pressure is gone, one WARNING row "N records dropped".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import context, snapshot
from ._jsonsafe import encode
from .diagnostics import Diagnostics
from .ledger import WORKER, Holding, Ledger
from .queue import Intake, Item
from .rows import ALIVE, Entry, RowBuilder, iso_timestamp
from .sender import Sender
from .snapshot import KIND, LOG, ROW, ROW_DATA, ROW_MERGE, ROW_TABLE, RUN, RUN_OPEN, SEQ

SPILL_PRESSURE = 0.5  # spool built batches while the sender is busy and the queue is this full
REPORT_PRESSURE = 0.25  # say "N records dropped" once the queue is this empty
BUILD_CHUNK = 32  # items built between two looks at the ledger (and a moment for other threads)


class Worker:
    """Batches intake items for the sender; see the module docstring."""

    def __init__(
        self,
        *,
        intake: Intake,
        ledger: Ledger,
        builder: RowBuilder,
        sender: Sender,
        diagnostics: Diagnostics,
        tables: Callable[[str], str],
        flush_interval_s: float,
        max_batch_rows: int,
        max_batch_bytes: int,
        write_ahead: bool,
        redact_run: Callable[[dict[str, Any]], dict[str, Any]],
        open_rows: dict[str, bytes],
    ) -> None:
        self.intake = intake
        self.ledger = ledger
        self.builder = builder
        self.sender = sender
        self.diag = diagnostics
        self.tables = tables
        self.flush_interval_s = flush_interval_s
        self.max_batch_rows = max_batch_rows
        self.max_batch_bytes = max_batch_bytes
        self.write_ahead = write_ahead and sender.spool is not None
        self.redact_run = redact_run
        self.open_rows = open_rows
        self.hurry = False  # flush(), close() or an ERROR record: send what there is now
        self.stopping = False
        self.batch: Holding | None = None
        self.waiting_for_slot = False
        self.on_cycle: Callable[[], None] = lambda: None
        self.serial = 0  # the handler's: which runs it announced
        self.heartbeat_interval_s = 0.0
        self._next_beat = 0.0
        self._fresh_runs: set[str] = set()

    # -- thread ------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            self.on_cycle()
            self._beat()
            self.cycle()
            if self.stopping and self.batch is None and not self.intake.rows:
                return
            timeout = self.flush_interval_s
            if self.batch is not None:
                timeout = max(self.flush_interval_s - (time.monotonic() - self.batch.started), 0.0)
            if self.stopping or self.waiting_for_slot:
                timeout = max(min(timeout, 0.05), 0.05 if self.waiting_for_slot else 0.0)
            self.intake.wait(timeout)

    def cycle(self, inline: bool = False, deadline: float | None = None) -> None:
        """Move what is queued into batches and hand them on. Never raises.

        ``inline``: no threads (interpreter shutdown, or after close): deliver on
        this thread, within ``deadline``.
        """
        try:
            self._write_assisted()
            reported = False
            while deadline is None or time.monotonic() < deadline:
                self._write_assisted()  # first: cheap, and it is what makes room under overload
                batch = self.batch
                if batch is None or batch.stage != WORKER:
                    batch = self.batch = self.ledger.hold(WORKER)
                room = self.max_batch_rows - batch.rows
                if room > 0 and self._fill(batch, min(room, BUILD_CHUNK)):
                    continue  # keep filling up to a batch
                if not batch.rows:
                    self._forget(batch)
                    if not reported and self._report_drops():
                        reported = True
                        continue
                    self.hurry = False
                    return
                if not self._due(batch):
                    return
                self.waiting_for_slot = not self._hand_on(batch, inline, deadline)
                if self.waiting_for_slot:
                    return  # the sender is busy and memory is fine: the rows wait in the intake
                if not self.intake.rows:
                    if reported or not self._report_drops():
                        self.hurry = False
                        return
                    reported = True
        except Exception as exc:  # never let a bug stop the worker
            self.diag.report("worker-bug", f"unexpected error in the worker: {exc!r}")

    def _fill(self, batch: Holding, n: int) -> bool:
        """Take up to ``n`` items into ``batch`` and build them; False when none were queued."""
        room_bytes = self.max_batch_bytes - batch.nbytes
        if room_bytes <= 0:
            return False
        self.ledger.take(n, room_bytes, batch)
        raw = batch.raw
        if not raw:
            return False
        entries, skipped = self._build(raw)
        if skipped:
            self.ledger.drop_raw(batch, skipped, "cancelled")
        if not self.ledger.built(batch, raw, entries):
            self.batch = None  # seized by a closer
        time.sleep(0)  # a moment for the job's own threads between chunks
        return True

    def _build(self, raw: list[Item]) -> tuple[list[Entry], list[Item]]:
        entries: list[Entry] = []
        skipped: list[Item] = []
        entry = self.builder.entry
        for item in raw:
            kind = item[KIND]
            if kind == LOG:
                entries.append(entry(item))
            elif kind == RUN_OPEN:
                built = self._run_open(item)
                (entries.append(built) if built is not None else skipped.append(item))
            elif kind == ROW:
                row = item[ROW_DATA]
                table = self.tables(item[ROW_TABLE])
                if table == self.tables("runs"):
                    row = self.redact_run(row)
                entries.append((item[SEQ], table, int(item[ROW_MERGE]), str(row.get("id")),
                                row.get("run_id"), snapshot.CONTROL_LEVEL, encode(row)))  # fmt: skip
        return entries, skipped

    def _run_open(self, item: Item) -> Entry | None:
        run = item[RUN]
        row = run.open_row()
        if row is None:  # cancelled (a decorator's template)
            return None
        if self.heartbeat_interval_s > 0:
            row["metadata"] = {**(row.get("metadata") or {}),
                               "heartbeat_interval_s": self.heartbeat_interval_s}  # fmt: skip
            self._fresh_runs.add(run.id)  # its first heartbeat comes at once
        payload = encode(self.redact_run(row))
        self.open_rows[run.id] = payload
        return (item[SEQ], self.tables("runs"), False, run.id, None, snapshot.CONTROL_LEVEL, payload)

    def _due(self, batch: Holding) -> bool:
        full = batch.rows >= self.max_batch_rows or batch.nbytes >= self.max_batch_bytes
        aged = time.monotonic() - batch.started >= self.flush_interval_s
        return full or aged or self.hurry or self.stopping

    def _hand_on(self, batch: Holding, inline: bool, deadline: float | None) -> bool:
        """Give a due batch to the sender, or to the spool; False if it must wait."""
        sender = self.sender
        if self.write_ahead and self._spool(batch, keep_on_failure=True):
            return True
        if inline:
            self.batch = None
            sender.deliver(batch, WORKER, deadline)
            return True
        if self.ledger.offer_slot(batch):
            self.batch = None
            sender.nudge()
            return True
        breaker = sender.breaker
        if sender.spool is not None and (
            self.intake.pressure() >= SPILL_PRESSURE
            or (breaker.is_open and not breaker.probe_due())
            or sender.deliverer.abort.is_set()
        ):
            return self._spool(batch, keep_on_failure=False)
        return False

    def _spool(self, batch: Holding, *, keep_on_failure: bool) -> bool:
        """Keep a built batch in the spool now (the sender replays it at the sink's speed).

        ``keep_on_failure``: if the spool cannot take it, leave it for the sender
        (write-ahead) instead of counting it lost; returns False then.
        """
        spooled, failed, why = self.sender.spool_entries(batch.entries)
        if failed and keep_on_failure:
            return False
        self.batch = None
        if failed:
            self.diag.rows_lost(len(failed), why)
        self.ledger.settle(batch, WORKER, spooled=spooled, dropped=failed, reason="spool_failed")
        self.sender.nudge()
        return True

    def _forget(self, batch: Holding) -> None:
        self.ledger.settle(batch, WORKER)
        self.batch = None

    def _write_assisted(self) -> None:
        """Spool the entries callers built themselves while memory was full."""
        while True:
            holding = self.ledger.take_assist(4096)
            if holding is None:
                return
            self.sender.settle_undelivered(holding, WORKER, [], [], holding.entries, "overload")
            self.sender.nudge()

    # -- heartbeats -----------------------------------------------------------------------
    def _beat(self) -> None:
        """Every ``heartbeat_interval_s``: each open run of this process says it is alive,
        with its metrics so far (through the same stream, after the rows logged before)."""
        if self.heartbeat_interval_s <= 0 or not self.sender.deliverer.heartbeats:
            return
        now = time.monotonic()
        due = now >= self._next_beat
        if not (due or self._fresh_runs):
            return
        if due:
            self._next_beat = now + self.heartbeat_interval_s
        fresh, self._fresh_runs = self._fresh_runs, set()
        at = iso_timestamp(time.time())
        for run in context.open_runs():
            if not run.owned or run.finished or self.serial not in run.announced:
                continue
            if due or run.id in fresh:
                row = {"id": run.id, "heartbeat_at": at, **run.progress()}
                self.intake.put_control((self.intake.next_seq(), snapshot.CONTROL_BYTES,
                                         snapshot.CONTROL_LEVEL, ROW, "runs", row, ALIVE))  # fmt: skip

    # -- "N records dropped" -------------------------------------------------------------
    def _report_drops(self) -> bool:
        """Queue one WARNING row "N records dropped" once pressure is low; True if it did."""
        self.ledger.collect_drops()
        if self.sender.breaker.is_open:
            return False  # it would only be dropped too: say it once the backend answers
        with self.ledger.lock:
            n = self.ledger.unreported_drops
            if not n or self.intake.pressure() > REPORT_PRESSURE:
                return False
            self.ledger.unreported_drops = 0
            self.ledger.drop_reports += 1
            totals: dict[str, int] = {}
            for (_, reason, level), count in self.ledger.dropped.items():
                if reason not in ("cancelled",):
                    totals[level] = totals.get(level, 0) + count
        run = context.current_run()
        run_id = self.ledger.last_drop_run or (run.id if run is not None else None)
        if run_id is None:
            return False
        record = logging.LogRecord(
            "supabase_log_handler", logging.WARNING, "", 0, "%d records dropped", (n,), None
        )
        record.threadName = threading.current_thread().name
        record.meta = {"dropped": n, "dropped_by_level": totals}
        item = snapshot.log_item(self.intake.next_seq(), record, run_id, None)
        self.ledger.last_report_seq = item[SEQ]
        self.intake.high.append(item)  # a log row like any other, counted as accepted
        self.intake.nbytes += item[snapshot.SIZE]
        return True
