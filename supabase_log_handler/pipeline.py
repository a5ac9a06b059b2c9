"""One handler's delivery machinery, and its life: start, flush, close, fork.

``Pipeline`` assembles queue -> worker -> sender -> sink, with the spool and the
breaker beside them. Threads start on first use, never in a constructor. Every
wait has a deadline: ``flush`` waits on the queue's progress, ``close`` spends
its budget in three phases (drain normally; cut retries short; spool whatever is
still in memory) so the process can always exit in time. After ``fork`` the child
gets a fresh queue, threads, spool connection and client, and does not resend
its parent's rows. When threads cannot run (interpreter shutdown on Python 3.12+,
or a flush from inside the worker) the same code runs on the calling thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ._redact import Redactor
from .config import Settings
from .diagnostics import Diagnostics
from .queue import RecordQueue
from .retry import Breaker
from .rows import RowBuilder
from .sender import Sender
from .sinks import Sink
from .spool import Entry, Spool
from .stats import Stats
from .worker import Worker


def make_sink(settings: Settings) -> Sink:
    """The sink the settings ask for (Supabase when a URL is set, else the local store)."""
    if settings.uses_supabase:
        from .sinks.supabase import SupabaseSink

        assert settings.url is not None and settings.key is not None
        return SupabaseSink(
            settings.url,
            settings.key,
            schema=settings.schema,
            request_timeout_s=settings.request_timeout_s,
        )
    from .sinks.local import LocalSink

    return LocalSink(
        settings.resolved_local_path, runs_table=settings.runs_table, logs_table=settings.logs_table
    )


class Pipeline:
    """See the module docstring."""

    def __init__(self, settings: Settings, *, redactor: Redactor, diagnostics: Diagnostics) -> None:
        self.settings = settings
        self.redactor = redactor
        self.diag = diagnostics
        self.sink_factory: Callable[[], Sink] = lambda: make_sink(settings)
        self._lock = threading.Lock()
        self._build()
        _register_fork_reset(self)

    def _build(self) -> None:
        s = self.settings
        self.pid = os.getpid()
        self.stats = Stats()
        self.queue = RecordQueue(max_rows=s.max_queue_rows, max_bytes=s.max_queue_bytes)
        self.spool = (
            Spool(s.resolved_spool_path, max_bytes=s.max_spool_bytes, destination=s.destination)
            if s.spool
            else None
        )
        self.breaker = Breaker(probe_interval_s=s.probe_interval_s)
        self.sender = Sender(
            sink_factory=lambda: self.sink_factory(),
            build_logs=lambda raw: self.worker.build_logs(raw),
            spool=self.spool,
            record_queue=self.queue,
            breaker=self.breaker,
            stats=self.stats,
            diagnostics=self.diag,
            runs_table=s.runs_table,
            retry_deadline_s=s.retry_deadline_s,
            retry_max_wait_s=s.retry_max_wait_s,
            replay_rows=min(
                s.max_batch_rows, 100
            ),  # small: decoded rows die young (see park_batch)
            lease_s=3 * s.request_timeout_s + s.retry_deadline_s,
        )
        self.worker = Worker(
            record_queue=self.queue,
            builder=RowBuilder(
                default_step=s.default_step,
                redactor=self.redactor,
                max_message_chars=s.max_message_chars,
                max_traceback_chars=s.max_traceback_chars,
                max_meta_bytes=s.max_meta_bytes,
            ),
            sender=self.sender,
            spool=self.spool,
            stats=self.stats,
            diagnostics=self.diag,
            logs_table=s.logs_table,
            runs_table=s.runs_table,
            flush_interval_s=s.flush_interval_s,
            max_batch_rows=s.max_batch_rows,
            max_batch_bytes=s.max_batch_bytes,
            write_ahead=s.durability == "disk",
        )
        self.sender_known_runs: set[str] = set()  # runs whose open row is already queued
        self.threads: list[threading.Thread] = []
        self.thread_ids: frozenset[int] = frozenset()
        self.started = False
        self.closed = False

    # -- life --------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the worker and sender threads once; False when threads cannot start."""
        if self.started:
            return True
        with self._lock:
            if self.started:
                return True
            try:
                threads = [
                    threading.Thread(
                        target=_without_signals(self.worker.run),
                        name="supabase-log-worker",
                        daemon=True,
                    ),
                    threading.Thread(
                        target=_without_signals(self.sender.run),
                        name="supabase-log-sender",
                        daemon=True,
                    ),
                ]
                for t in threads:
                    t.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                self.worker.inline = True
                return False
            self.threads = threads
            self.thread_ids = frozenset(t.ident for t in threads if t.ident is not None)
            self.started = True
            return True

    def alive(self) -> bool:
        return self.started and all(t.is_alive() for t in self.threads)

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's rows and threads, keep the settings."""
        self._lock = threading.Lock()
        self.diag.reset_after_fork()
        self._build()

    # -- flushing ----------------------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        """Wait until everything put so far is delivered, spooled or dead-lettered."""
        target = self.queue.last_seq()
        if threading.get_ident() in self.thread_ids or not self.alive():
            return self._flush_inline(target, timeout_s)
        if _holds_logging_lock() and not self.sender.ready.is_set():
            # The sender is importing the client, which needs the lock this thread holds
            # (dictConfig, logging.shutdown): waiting could only end at the deadline.
            return self.queue.wait_done(target, 0)
        deadline = time.monotonic() + timeout_s
        self.worker.hurry = True
        self.worker.wake.set()
        done = self.queue.wait_done(target, timeout_s)
        while done and self.queue.report_pending() and time.monotonic() < deadline:
            # Rows were shed: their "N records dropped" row belongs to this flush too.
            self.worker.hurry = True
            self.worker.wake.set()
            self.queue.wait_changed(min(0.05, max(deadline - time.monotonic(), 0)))
            done = self.queue.wait_done(self.queue.last_seq(), max(deadline - time.monotonic(), 0))
        if done and self.queue.last_report_seq > target:  # a report queued after our target
            done = self.queue.wait_done(
                self.queue.last_report_seq, max(deadline - time.monotonic(), 0)
            )
        if done and self.spool is not None and self.sender.spool_dirty:
            self._replay_now(deadline)
        return done

    def _replay_now(self, deadline: float) -> None:
        """Have the sender try the spool now (the backend may be back), within the deadline."""
        sender = self.sender
        while sender.spool_dirty and time.monotonic() < deadline:
            start = sender.request_replay()
            with sender.replay_round:
                while sender.replay_rounds <= start and time.monotonic() < deadline:
                    sender.replay_round.wait(min(deadline - time.monotonic(), 0.5))
            if self.breaker.is_open:
                return  # still down: the rows stay safely in the spool

    def _flush_inline(self, target: int, timeout_s: float) -> bool:
        """Do the worker's and sender's job on this thread, within the deadline."""
        if threading.get_ident() in self.thread_ids:
            return False  # the worker cannot wait for itself
        deadline = time.monotonic() + timeout_s
        self.worker.inline = True
        self.worker.hurry = True
        while time.monotonic() < deadline:
            self.worker.pump()
            if self.queue.wait_done(target, 0):
                return True
        return self.queue.wait_done(target, 0)

    def close(self, timeout_s: float) -> bool:
        """Drain within ``timeout_s``; whatever is left is spooled. Safe twice."""
        if self.closed:
            return True
        self.closed = True
        deadline = time.monotonic() + timeout_s
        target = self.queue.last_seq()
        self.worker.stop.set()
        if self.started and _holds_logging_lock() and not self.sender.ready.is_set():
            self.sender.abort.set()  # see flush(): keep the rows in the spool instead of waiting
            self._spool_leftovers()
            self.sender.request_stop()
            return False
        done = self.flush(timeout_s * 0.6)
        if not done:
            self.sender.abort.set()  # stop retrying; failures now go to the spool
            self.worker.wake.set()
            done = self.queue.wait_done(target, max(deadline - time.monotonic(), 0) * 0.5)
        if not done:
            self._spool_leftovers()
        self.sender.request_stop()
        self.worker.wake.set()
        for t in self.threads:
            t.join(max(min(deadline - time.monotonic(), 0.5), 0.0))
        if any(t.is_alive() for t in self.threads):
            return done  # a request is still hanging; its rows are in the spool
        if done and self.spool is not None and not self.breaker.is_open:
            # Backend healthy: send what earlier failures (or other processes) left behind.
            while time.monotonic() < deadline - 0.25 and self.sender.replay_once():
                pass
        self.sender.close()
        if self.spool is not None:
            self.spool.close()
        return done

    def _spool_leftovers(self) -> None:
        """Last resort at the deadline: everything still in memory goes to the spool."""
        if self.spool is None:
            n = self.queue.rows + sum(
                h.rows for h in (self.sender.inflight, self.worker.current) if h is not None
            )
            self.stats.add("lost", n)
            self.diag.report(
                "lost",
                f"{n} rows lost at exit: the backend did not answer in time and the spool is disabled",
            )
            return
        entries: list[Entry] = []
        for holder in (self.sender.inflight, self.worker.current):
            if holder is not None:
                entries.extend(e for e in holder.entries if not e.seq)
                entries.extend(self.worker.build_logs(list(holder.raw)))
        token, items = self.queue.take(10**9, 10**18)
        entries.extend(self.worker.entries_of(items))
        try:
            self.spool.add(entries)
            self.stats.add("spooled", len(entries))
        except Exception as exc:
            self.stats.add("lost", len(entries))
            self.diag.report("lost", f"{len(entries)} rows lost at exit: {exc!r}")
        self.queue.done(token)

    def stats_dict(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out["queued"] = self.queue.rows
        _, totals = self.queue.dropped_unreported, dict(self.queue.dropped)
        out["dropped"] = totals
        out["breaker_open"] = self.breaker.is_open
        out["last_error"] = self.diag.last_error
        return out


_ASYNC_SIGNALS = (
    "SIGINT",
    "SIGTERM",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGCHLD",
    "SIGWINCH",
)


def _without_signals(target: Callable[[], None]) -> Callable[[], None]:
    """Run ``target`` with the asynchronous signals blocked in its thread.

    The kernel hands a process-directed signal (SIGTERM, SIGINT ...) to any thread
    that does not block it. If it picks one of ours, Python runs the handler only
    when the main thread next wakes up, so a job sleeping in its main thread would
    not stop when told to. Blocked here, the signal goes to the application's threads.
    """

    def run() -> None:
        import signal

        if hasattr(signal, "pthread_sigmask"):
            wanted = {getattr(signal, name) for name in _ASYNC_SIGNALS if hasattr(signal, name)}
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
        target()

    return run


def _holds_logging_lock() -> bool:
    """True when this thread holds ``logging``'s module lock (dictConfig, logging.shutdown)."""
    import logging

    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    try:
        return bool(is_owned()) if is_owned is not None else False
    except Exception:
        return False


_pipelines: weakref.WeakSet[Pipeline] = weakref.WeakSet()


def _register_fork_reset(pipeline: Pipeline) -> None:
    _pipelines.add(pipeline)


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
