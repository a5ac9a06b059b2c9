"""One handler's delivery machinery, and its life: start, flush, close, fork.

``Pipeline`` assembles intake -> worker -> ledger slot -> sender -> sink, with
the spool beside them. Threads start on first use, never in a constructor, and
starting is lock-free (a signal handler may log while the first record is being
queued). Every wait has a deadline. ``flush`` waits until the ledger has
settled everything queued before it; ``close`` spends its budget draining, then
cuts retries short, then seizes whatever is still unsettled (queued, being
built, waiting in the slot or in flight) and spools it: the ledger, not a list
of places, says what is left. A closed pipeline still accepts records; they are
settled on the calling thread at the next ``close`` (``logging.shutdown``) or at
exit. After ``fork`` the child gets a fresh intake, ledger, threads, spool
segment and client, and never resends its parent's rows.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import context
from ._redact import Redactor
from ._threads import holds_logging_lock, start_without_signals, without_signals
from .config import Settings
from .delivery import Deliverer
from .diagnostics import Diagnostics
from .ledger import CLOSER, Ledger
from .queue import Intake, Item
from .retry import Breaker
from .rows import RowBuilder
from .sender import Sender
from .sinks import Sink
from .sinks.factory import make_sink
from .spool import Spool
from .worker import Worker

FOREIGN_REPLAY_AT_EXIT_S = 1.0  # at most this much of a clean exit goes to others' leftovers


class Pipeline:
    """See the module docstring."""

    def __init__(self, settings: Settings, *, redactor: Redactor, diagnostics: Diagnostics) -> None:
        self.settings = settings
        self.redactor = redactor
        self.diag = diagnostics
        self.sink_factory: Callable[[], Sink] = lambda: make_sink(settings)
        self.serial = 0  # the handler's, set by it: which runs it announced
        self._build()
        _pipelines.add(self)

    def _build(self) -> None:
        s = self.settings
        self.pid = os.getpid()
        self.intake = Intake(max_rows=s.max_queue_rows, max_bytes=s.max_queue_bytes)
        self.ledger = Ledger(self.intake, runs_table=s.runs_table, logs_table=s.logs_table)
        self.counters: Counter[str] = Counter()
        # Opening rows of runs whose final row this pipeline has not settled yet: a row of such a
        # run may still need its run created first, even long after the run finished.
        self.open_rows: dict[str, bytes] = {}
        self.ledger.on_settled = self._forget_finished
        self.spool = (
            Spool(s.resolved_spool_path, max_bytes=s.max_spool_bytes, destination=s.destination,
                  runs_table=s.runs_table)
            if s.spool
            else None
        )
        self.breaker = Breaker(probe_interval_s=s.probe_interval_s)
        parked: str | None = getattr(self, "_parked", None)
        if parked is not None:  # a forked child keeps its parent's verdict
            self.breaker.park(parked)
        self.deliverer = Deliverer(
            sink_factory=lambda: self.sink_factory(),
            breaker=self.breaker,
            runs_table=s.runs_table,
            logs_table=s.logs_table,
            retry_deadline_s=s.retry_deadline_s,
            retry_max_wait_s=s.retry_max_wait_s,
            run_row=self.run_row,
            on_request=self._count_request,
        )
        self.sender = Sender(
            ledger=self.ledger,
            deliverer=self.deliverer,
            spool=self.spool,
            diagnostics=self.diag,
            run_row=self.run_row,
            wake_worker=self.intake.nudge,
            counters=self.counters,
            replay_rows=s.max_batch_rows,
            replay_bytes=s.max_batch_bytes,
        )
        self.builder = RowBuilder(
            default_step=s.default_step,
            redactor=self.redactor,
            max_message_chars=s.max_message_chars,
            max_traceback_chars=s.max_traceback_chars,
            max_meta_bytes=s.max_meta_bytes,
            logs_table=s.logs_table,
        )
        self.worker = Worker(
            intake=self.intake,
            ledger=self.ledger,
            builder=self.builder,
            sender=self.sender,
            diagnostics=self.diag,
            tables=s.table,
            flush_interval_s=s.flush_interval_s,
            max_batch_rows=s.max_batch_rows,
            max_batch_bytes=s.max_batch_bytes,
            write_ahead=s.durability == "disk",
            redact_run=self.redact_run,
            open_rows=self.open_rows,
        )
        if self.spool is not None:
            self.intake.assist_builder = self._assisted_entry
        from .lifecycle import notice_takeover

        self.worker.on_cycle = notice_takeover
        self.worker.heartbeat_interval_s = s.heartbeat_interval_s
        self.worker.serial = self.serial
        self.threads: list[threading.Thread] = []
        self.thread_ids: frozenset[int] = frozenset()
        self.started = False
        self._starting = threading.Lock()
        self._ending = threading.Lock()
        self._running = 0
        self.closed = False
        self.final = False  # the process's last drain is over: later records are counted lost

    # -- helpers -------------------------------------------------------------------------
    def run_row(self, run_id: str) -> bytes | None:
        """The encoded row that creates run ``run_id`` (what the foreign key needs), if known."""
        known = self.open_rows.get(run_id)
        if known is not None:
            return known
        row = context.open_row(run_id)
        if row is None:
            return None
        from ._jsonsafe import encode

        return encode(self.redact_run(row))

    def _forget_finished(self, entries: list[Any]) -> None:
        runs = self.settings.runs_table
        for e in entries:
            if e[1] == runs and e[2] == 1:  # a run's final row is settled: its rows came before it
                self.open_rows.pop(e[3], None)

    def redact_run(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run's state as it may leave the process: error text and metadata masked."""
        out = dict(row)
        if out.get("error_message"):
            out["error_message"] = self.redactor.text(str(out["error_message"]))
        if out.get("metadata"):
            out["metadata"] = self.redactor.value(out["metadata"])
        return out

    def _assisted_entry(self, item: Item) -> tuple[Any, ...]:
        """A caller's own row, encoded and framed for the spool (CPU only, no I/O)."""
        from .spool_frames import frame_of

        entry = self.builder.entry(item)
        return (*entry, frame_of(entry))

    def _count_request(self, what: str) -> None:
        self.counters["retries" if what == "retry" else "requests"] += 1

    def park(self, reason: str) -> None:
        """A configuration mistake: send nothing in this process (or its children), keep every row."""
        self._parked = reason
        self.breaker.park(reason)

    # -- life --------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the worker and sender threads once; False when they cannot run (yet)."""
        if self.started:
            return True
        if not self._starting.acquire(blocking=False):
            return False  # another call (maybe the one this signal handler interrupted) is at it
        try:
            if self.started or self.closed:
                return self.started
            self._running = 2
            threads = [
                threading.Thread(target=without_signals(self._thread(self.worker.run)),
                                 name="supabase-log-worker", daemon=True),
                threading.Thread(target=without_signals(self._thread(self.sender.run)),
                                 name="supabase-log-sender", daemon=True),
            ]  # fmt: skip
            try:
                for t in threads:
                    start_without_signals(t)
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return False
            self.threads = threads
            self.thread_ids = frozenset(t.ident for t in threads if t.ident is not None)
            self.started = True
            return True
        finally:
            self._starting.release()

    def _thread(self, target: Callable[[], None]) -> Callable[[], None]:
        """``target``; the last of the two threads to end after close lets go of files and sockets."""

        def run() -> None:
            try:
                target()
            finally:
                with self._ending:
                    self._running -= 1
                    last = self._running == 0
                    # Its ident may be given to a job's thread next: that one's records are not ours.
                    self.thread_ids = self.thread_ids - {threading.get_ident()}
                if last and self.closed:
                    self._release()

        return run

    def alive(self) -> bool:
        return self.started and all(t.is_alive() for t in self.threads)

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's rows and threads, keep the settings."""
        if self.spool is not None:
            self.spool.reset_after_fork()
        self.diag.reset_after_fork()
        self._build()

    # -- flushing ----------------------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is delivered, spooled or dead-lettered."""
        deadline = time.monotonic() + timeout_s
        target = self.intake.next_seq()
        if threading.get_ident() in self.thread_ids:
            return False  # the worker cannot wait for itself
        if not self.alive():
            return self.drain_inline(deadline, target)
        if holds_logging_lock() and not self.sender.ready.is_set():
            # The sender is importing its client, which needs the lock this thread holds
            # (dictConfig, logging.shutdown): waiting could only end at the deadline.
            return self.ledger.wait_settled(target, 0)
        self.worker.hurry = True
        self.intake.nudge()
        done = self.ledger.wait_settled(target, deadline)
        self.ledger.collect_drops()
        while done and self.ledger.unreported_drops and time.monotonic() < deadline:
            # Rows were shed: their "N records dropped" row belongs to this flush too.
            if self.intake.pressure() > 0.25 or self.breaker.is_open:
                break  # it is written once the pressure is gone and the backend answers
            self.worker.hurry = True
            self.intake.nudge()
            with self.ledger.changed:
                self.ledger.changed.wait(0.01)
            self.ledger.collect_drops()
        report = self.ledger.last_report_seq
        if done and report >= target:
            done = self.ledger.wait_settled(report + 1, deadline)
        if done:
            self._replay_now(deadline)
        return done

    def _replay_now(self, deadline: float, foreign_s: float = 0.0) -> None:
        if self.alive():
            self.sender.replay_now(deadline, foreign_s)

    def drain_inline(self, deadline: float, target: int | None = None) -> bool:
        """Do the worker's and the sender's job on this thread, within the deadline."""
        worker = self.worker
        worker.hurry = True
        target = self.intake.next_seq() if target is None else target
        while time.monotonic() < deadline:
            worker.cycle(inline=True, deadline=deadline)
            if self.ledger.wait_settled(target, 0):
                return True
            if self.breaker.is_open and not self.breaker.probe_due():
                break
        return self.ledger.wait_settled(target, 0)

    # -- closing ----------------------------------------------------------------------
    def close(self, timeout_s: float) -> bool:
        """Deliver within ``timeout_s``; whatever is left is spooled. Safe twice.

        Called again on a closed pipeline (``logging.shutdown`` after the exit drain,
        or a later exit), it settles what was logged since, on this thread.
        """
        deadline = time.monotonic() + timeout_s
        if self.closed:
            return self._settle_late(deadline)
        self.closed = True
        target = self.intake.next_seq()
        reserve = min(timeout_s * 0.3, 0.05 + self.ledger.unsettled_rows() * 20e-6)
        done = False
        if self.alive() and not (holds_logging_lock() and not self.sender.ready.is_set()):
            self.worker.hurry = True
            self.intake.nudge()
            done = self.ledger.wait_settled(target, deadline - reserve - timeout_s * 0.2)
            if not done:
                self.deliverer.abort.set()  # stop retrying: failures now go to the spool
                self.intake.nudge()
                done = self.ledger.wait_settled(target, deadline - reserve)
            if done:  # backend healthy: also send what others left behind, for a moment
                self._replay_now(deadline - 0.1, foreign_s=FOREIGN_REPLAY_AT_EXIT_S)
        elif not self.alive():
            done = self.drain_inline(deadline - reserve, target)
        self.deliverer.abort.set()
        self._seize_and_spool()
        self._stop_threads(deadline)
        self.diag.say_unsaid_losses()
        return done

    def _settle_late(self, deadline: float) -> bool:
        """Records logged after close: deliver them on this thread, spool the rest."""
        done = True
        if self.ledger.unsettled_rows():
            self.deliverer.abort.clear()
            done = self.drain_inline(deadline - 0.05)
            self.deliverer.abort.set()
            self._seize_and_spool()
        self.diag.say_unsaid_losses()
        from . import lifecycle

        if lifecycle.exiting():
            self.final = True
        if lifecycle.exiting() or not any(t.is_alive() for t in self.threads):
            self._release()  # let go of the spool: another process, or push, may replay it
        return done

    def _seize_and_spool(self) -> None:
        """At the deadline: everything still unsettled is built here and spooled."""
        for holding in self.ledger.seize():
            entries = list(holding.entries)
            raw: list[Item] = list(holding.raw)
            if raw:
                built, skipped = self.worker._build(raw)
                entries.extend(built)
                if skipped:
                    self.ledger.drop_raw(holding, skipped, "cancelled")
            spooled, failed, why = self.sender.spool_entries(entries)
            if failed:
                self.diag.rows_lost(len(failed), f"at exit: {why}")
            self.ledger.settle(holding, CLOSER, spooled=spooled, dropped=failed,
                               reason="no_spool" if self.spool is None else "spool_failed")  # fmt: skip

    def _stop_threads(self, deadline: float) -> None:
        self.worker.stopping = True
        self.sender.request_stop()
        self.intake.nudge()
        for t in self.threads:
            t.join(max(min(deadline - time.monotonic(), 0.5), 0.0))
        if any(t.is_alive() for t in self.threads):
            return  # a request is still hanging; its rows are already in the spool
        self._release()

    def _release(self) -> None:
        self.deliverer.close()
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.close()

    def stats(self) -> dict[str, Any]:
        out = self.ledger.snapshot()
        out.update(
            requests=self.counters["requests"],
            retries=self.counters["retries"],
            batches=self.counters["batches"],
            queued=self.intake.rows,
            breaker_open=self.breaker.is_open,
            last_error=self.diag.last_error,
        )
        return out


_pipelines: weakref.WeakSet[Pipeline] = weakref.WeakSet()


def _before_fork() -> None:
    """Let a sender finish loading its client before the process forks.

    A fork while a thread is importing leaves that module's import lock held in the
    child by a thread that no longer exists, and the child's first import of it
    hangs for ever. The wait is bounded and only ever happens right after start.
    """
    for pipeline in list(_pipelines):
        if pipeline.started and pipeline.pid == os.getpid() and pipeline.alive():
            pipeline.sender.ready.wait(5.0)


def _after_fork_in_child() -> None:
    for pipeline in list(_pipelines):
        pipeline.reset_after_fork()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
