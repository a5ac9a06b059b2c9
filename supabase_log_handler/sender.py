"""The sender thread: the only user of the sink.

It takes batches from the worker and delivers them in order: the runs they need
(created if absent), then the log rows (one idempotent upsert), then final run
states. Transient failures are retried (``retry.py``); what still fails is
spooled and the breaker opens. Rows the database refuses are isolated by
splitting the batch in halves, retried once sanitised, and only then kept in the
spool as dead letters, so one bad row never costs the others. When idle and the
backend is healthy, it replays the spool, oldest first.
"""

from __future__ import annotations

import contextlib
import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from typing import Any

from . import context
from .diagnostics import Diagnostics
from .errors import DataError, DeliveryError, SetupError, TransientError
from .queue import RecordQueue
from .retry import Breaker, call_with_retry, preload
from .rows import sanitise_row
from .sinks import Sink
from .spool import Entry, Spool, SpoolFullError
from .stats import Stats


class Batch:
    """What one request round carries, and the queue chunks it came from.

    ``entries`` are ready rows (run states, and log rows already written ahead to
    the spool); ``raw`` are log snapshots (plain tuples) whose rows are built only
    just before sending, so that large batches hold nothing the garbage
    collector has to walk.
    """

    __slots__ = ("entries", "nbytes", "raw", "started", "tokens")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.raw: list[tuple[Any, ...]] = []
        self.tokens: list[int] = []
        self.nbytes = 0
        self.started = time.monotonic()

    @property
    def rows(self) -> int:
        return len(self.entries) + len(self.raw)


WORKER_THREAD_PREFIX = "supabase-log-"
CLIENT_LOGGERS = ("httpx", "httpcore", "hpack", "h2", "h11", "postgrest", "supabase", "tenacity")


def _not_from_our_threads(record: logging.LogRecord) -> bool:
    return not (record.threadName or "").startswith(WORKER_THREAD_PREFIX)


def quiet_client_loggers() -> None:
    """Keep the client's own records made on our threads ("HTTP Request: POST ...") out of
    the application's handlers too; records the application's own threads make are untouched."""
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if _not_from_our_threads not in logger.filters:
            logger.addFilter(_not_from_our_threads)


class Sender:
    """Delivers batches and replays the spool; see the module docstring."""

    def __init__(
        self,
        *,
        sink_factory: Callable[[], Sink],
        build_logs: Callable[[list[tuple[Any, ...]]], list[Entry]],
        spool: Spool | None,
        record_queue: RecordQueue,
        breaker: Breaker,
        stats: Stats,
        diagnostics: Diagnostics,
        runs_table: str,
        retry_deadline_s: float,
        retry_max_wait_s: float,
        replay_rows: int,
        lease_s: float,
    ) -> None:
        self._sink_factory = sink_factory
        self.build_logs = build_logs
        self._sink: Sink | None = None
        self.spool = spool
        self.queue = record_queue
        self.breaker = breaker
        self.stats = stats
        self.diag = diagnostics
        self.runs_table = runs_table
        self.retry_deadline_s = retry_deadline_s
        self.retry_max_wait_s = retry_max_wait_s
        self.replay_rows = replay_rows
        self.lease_s = lease_s
        self.handoff: queue_mod.Queue[Batch | None] = queue_mod.Queue(maxsize=1)
        self.stop = threading.Event()
        self.abort = threading.Event()  # cut retries short: shutdown deadline is near
        self.inflight: Batch | None = None
        self.ready = threading.Event()  # the sink's client is loaded
        self.spool_dirty = spool is not None  # there may be something to replay
        self._ensured: set[str] = set()
        self._last_spool_check = 0.0
        self._next_replay = 0.0
        self.replay_requested = False  # flush(): try the spool now, whatever the breaker says
        self.replay_round = threading.Condition()
        self.replay_rounds = 0

    # -- thread ------------------------------------------------------------------------
    def run(self) -> None:
        self._prepare()
        while True:
            try:
                batch = self.handoff.get(timeout=self._idle_wait_s())
            except queue_mod.Empty:
                if self.stop.is_set():
                    return
                self._idle()
                continue
            if batch is None:  # request_stop
                return
            self.deliver(batch)

    def _prepare(self) -> None:
        """Load the client now, before the first batch, so the import (which takes
        ``logging``'s module lock) is over before the job can be reconfiguring logging."""
        try:
            preload()
            self.sink.prepare()
            quiet_client_loggers()
        except Exception as exc:
            self.diag.report("client", f"cannot create the Supabase client: {exc!r}")
        finally:
            self.ready.set()

    def request_stop(self) -> None:
        """Ask the thread to end after the batch it holds."""
        self.stop.set()
        with contextlib.suppress(queue_mod.Full):
            self.handoff.put_nowait(None)

    def _idle_wait_s(self) -> float:
        if self.replay_requested:
            return 0.0
        if self.spool_dirty and not self.breaker.is_open:
            return min(max(self._next_replay - time.monotonic(), 0.01), 0.25)
        if self.breaker.is_open:
            return max(min(self.breaker.seconds_to_probe(), 1.0), 0.05)
        return 0.25 if self.spool_dirty else 1.0

    def _idle(self) -> None:
        if self.spool is None or self.abort.is_set():
            return
        now = time.monotonic()
        if not self.spool_dirty and now - self._last_spool_check > 30.0:
            self._last_spool_check = now
            self.spool_dirty = True  # other processes may have left rows for us
        forced, self.replay_requested = self.replay_requested, False
        waiting = self.breaker.is_open and not self.breaker.probe_due()
        if waiting and not (forced and self.breaker.early_probe_allowed()):
            with self.replay_round:  # flush() is told at once: the spool keeps the rows
                self.replay_rounds += 1
                self.replay_round.notify_all()
            return
        if not forced and now < self._next_replay:
            return
        if self.spool_dirty:
            t0 = time.monotonic()
            self.replay_once()
            # Background replay uses at most half of one core, so a backlog never slows the job.
            self._next_replay = time.monotonic() + (time.monotonic() - t0)
        with self.replay_round:
            self.replay_rounds += 1
            self.replay_round.notify_all()

    def request_replay(self) -> int:
        """Ask the thread to replay the spool now; returns the round to wait past."""
        with self.replay_round:
            self.replay_requested = True
            return self.replay_rounds

    # -- delivery ----------------------------------------------------------------------
    @property
    def sink(self) -> Sink:
        if self._sink is None:
            self._sink = self._sink_factory()
        return self._sink

    def _call(self, fn: Callable[[], Any]) -> Any:
        self.stats.add("requests")
        if self.breaker.is_open or self.abort.is_set():
            return fn()  # one attempt: this is a probe, or time is up
        return call_with_retry(
            fn,
            deadline_s=self.retry_deadline_s,
            max_wait_s=self.retry_max_wait_s,
            abort=self.abort,
            on_retry=lambda exc: self.stats.add("retries"),
        )

    def deliver(self, batch: Batch) -> None:
        """Deliver one batch from the worker; whatever fails is spooled. Never raises."""
        self.inflight = batch
        try:
            if self.breaker.is_open and not self.breaker.probe_due() and self.spool is not None:
                self.park_batch(batch, self.breaker.reason or "backend unavailable")
                return
            self.materialize(batch)
            leftovers, error = self.send(batch.entries)
            left = {id(e) for e in leftovers}
            self._ack([e for e in batch.entries if e.seq and id(e) not in left])
            if error is not None:
                self._park(leftovers, str(error))
                self._trip(error)
            else:
                self.stats.add("batches")
                self.breaker.reset()
        except Exception as exc:  # a bug must not kill the thread or lose the batch
            self.diag.report("sender-bug", f"unexpected error in sender: {exc!r}")
            self._park(batch.entries, repr(exc))
        finally:
            self.inflight = None
            self.queue.done(*batch.tokens)

    def materialize(self, batch: Batch) -> list[Entry]:
        """Build the rows of a batch's raw snapshots (ids are made here, once)."""
        if batch.raw:
            raw, batch.raw = batch.raw, []
            batch.entries = batch.entries + self.build_logs(raw)
        return batch.entries

    def send(self, entries: list[Entry]) -> tuple[list[Entry], DeliveryError | None]:
        """Deliver entries in order; returns what was not delivered and why."""
        done: set[int] = set()
        try:
            for e in entries:
                if e.kind == "run_open":
                    self._upsert_run(e, final=False)
                    self._ensured.add(str(e.row["id"]))
                    done.add(id(e))
            logs = [e for e in entries if e.kind == "log"]
            for run_id in {str(e.row.get("run_id")) for e in logs} - self._ensured:
                self._ensure_run(run_id)
            by_table: dict[str, list[Entry]] = {}
            for e in logs:
                by_table.setdefault(e.target, []).append(e)
            for part in by_table.values():
                self._insert_isolating(part)
                done.update(id(e) for e in part)
            for e in entries:
                if e.kind == "run_final":
                    self._upsert_run(e if e.seq else self._with_summary(e), final=True)
                    done.add(id(e))
            return [], None
        except (TransientError, SetupError) as exc:
            return [e for e in entries if id(e) not in done], exc

    def _with_summary(self, entry: Entry) -> Entry:
        """The final run row with the handler's delivery counters in ``metadata``.

        Taken here, after every row queued before the run finished has been sent,
        spooled or dead-lettered, so the counts are settled.
        """
        st = self.stats.as_dict()
        summary = {
            k: st[k] for k in ("enqueued", "sent", "spooled", "dead_lettered", "retries", "lost")
        }
        summary["dropped"] = sum(self.queue.dropped.values())
        metadata = dict(entry.row.get("metadata") or {})
        metadata["log_delivery"] = summary
        return entry._replace(row={**entry.row, "metadata": metadata})

    def _ensure_run(self, run_id: str) -> None:
        run = context.lookup(run_id)
        row = run.open_row() if run is not None else None
        if row is None and self.spool is not None:
            row = self.spool.find_run(run_id)
        if row is not None:
            self._upsert_run(Entry("run_open", self.runs_table, row), final=False)
        self._ensured.add(run_id)

    def _upsert_run(self, entry: Entry, *, final: bool) -> None:
        try:
            self._call(lambda: self.sink.upsert_run(entry.target, entry.row, final=final))
        except DataError as exc:
            fixed = sanitise_row(entry.row)
            try:
                self._call(lambda: self.sink.upsert_run(entry.target, fixed, final=final))
                self.stats.add("sanitised")
            except DataError as exc2:
                self._bury(entry, exc2 if exc2.code else exc)

    def _insert_isolating(self, entries: list[Entry]) -> None:
        table = entries[0].target
        try:
            self._call(lambda: self.sink.insert_rows(table, [e.row for e in entries]))
            self.stats.add("sent", len(entries))
        except DataError as exc:
            if len(entries) == 1:
                self._repair(entries[0], exc)
                return
            mid = len(entries) // 2
            self._insert_isolating(entries[:mid])
            self._insert_isolating(entries[mid:])

    def _repair(self, entry: Entry, exc: DataError) -> None:
        fixed = sanitise_row(entry.row)
        try:
            self._call(lambda: self.sink.insert_rows(entry.target, [fixed]))
            self.stats.add("sanitised")
            self.stats.add("sent")
        except DataError as exc2:
            self._bury(entry, exc2)

    def _bury(self, entry: Entry, exc: DataError) -> None:
        """Keep a refused entry as a dead letter with the server's error."""
        self.stats.add("dead_lettered")
        self.diag.report(
            "dead-letter",
            f"the database refused a {entry.kind} row ({exc}); kept in the spool as a dead letter",
        )
        if self.spool is None:
            self.stats.add("lost")
            return
        try:
            seq = entry.seq or (self.spool.add([entry], want_seqs=True) or [0])[0]
            if seq:
                self.spool.dead_letter(seq, exc.code, str(exc))
        except Exception as spool_exc:
            self.stats.add("lost")
            self.diag.report("spool", f"cannot keep a dead letter: {spool_exc!r}")

    # -- failure paths -----------------------------------------------------------------
    def _trip(self, error: DeliveryError) -> None:
        if isinstance(error, SetupError):
            self.diag.report("setup", f"Supabase refused the rows: {error}. To fix: {error.fix}")
            self.breaker.trip(str(error), at_least_s=30.0, needs_person=True)
        else:
            where = (
                "keeping rows in the spool"
                if self.spool is not None
                else "the spool is disabled, so rows that cannot wait in memory are dropped"
            )
            self.diag.report("outage", f"cannot deliver to Supabase ({error}); {where}")
            self.breaker.trip(str(error))

    def _park(self, entries: list[Entry], reason: str) -> None:
        """Put undelivered entries in the spool (or give claimed ones back)."""
        if not entries:
            return
        owned = [e.seq for e in entries if e.seq]
        fresh = [e for e in entries if not e.seq]
        if self.spool is None:
            self.stats.add("lost", len(fresh))
            self.diag.report("lost", f"{len(fresh)} rows lost: {reason}; the spool is disabled")
            return
        try:
            self.spool.release(owned)
            self.spool.add(fresh)
            self.stats.add("spooled", len(fresh))
            self.spool_dirty = True
        except (SpoolFullError, Exception) as exc:
            self.stats.add("lost", len(fresh))
            self.diag.report("lost", f"{len(fresh)} rows lost: {reason}; spool: {exc}")

    def park_batch(self, batch: Batch, reason: str, chunk_rows: int = 64) -> None:
        """Spool a whole batch, building its rows a few at a time.

        Small chunks die young: the garbage collector never promotes them, so a
        long outage does not make collections (which stop every thread) longer.
        """
        self._park(batch.entries, reason)
        batch.entries = []
        raw, batch.raw = batch.raw, []
        for i in range(0, len(raw), chunk_rows):
            self._park(self.build_logs(raw[i : i + chunk_rows]), reason)

    def _ack(self, entries: list[Entry]) -> None:
        if self.spool is not None and entries:
            try:
                self.spool.ack([e.seq for e in entries])
            except Exception as exc:
                self.diag.report("spool", f"cannot update the spool: {exc!r}")

    # -- replay ------------------------------------------------------------------------
    def replay_once(self) -> int:
        """Send one chunk of the spool; returns how many entries were delivered."""
        if self.spool is None:
            return 0
        try:
            entries = self.spool.claim(self.replay_rows, self.lease_s)
        except Exception as exc:
            self.diag.report("spool", f"cannot read the spool: {exc!r}")
            return 0
        if not entries:
            self.spool_dirty = False
            return 0
        leftovers, error = self.send(entries)
        left = {id(e) for e in leftovers}
        delivered = [e for e in entries if id(e) not in left]
        self._ack(delivered)
        if leftovers:
            self.spool.release([e.seq for e in leftovers])
        self.stats.add("replayed", len(delivered))
        if error is not None:
            self._trip(error)
        else:
            self.breaker.reset()
        return len(delivered)

    def with_seqs(self, entries: list[Entry], seqs: list[int]) -> list[Entry]:
        return [e._replace(seq=s) for e, s in zip(entries, seqs, strict=False)]

    def close(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()
