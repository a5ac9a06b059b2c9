"""``SupabaseHandler``: the stdlib ``logging.Handler`` users attach.

``emit`` is the only code on the caller's thread: it finds the record's run and
step, snapshots the record (``snapshot.py``) and offers it to the intake. It
takes no lock (``handle`` skips the handler lock too), so a signal handler,
``__del__`` or a GC callback may log while the same thread is inside ``emit``;
it never waits and never raises: failures go to ``handleError``, and every
record that reaches it is counted, whatever becomes of it.

The constructor is the dictConfig contract: keyword-only scalars, validated at
once, no I/O and no threads; it registers the process hooks (``lifecycle.py``).
Everything else happens in the pipeline (``pipeline.py``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import Any

from . import context, lifecycle, pools, runs, snapshot
from ._redact import Redactor
from ._types import RunLike
from .config import (
    FIELDS,
    Problem,
    Settings,
    default_script_name,
    load_settings,
    load_settings_forgiving,
)
from .diagnostics import Diagnostics
from .pipeline import Pipeline
from .queue import AFTER_CLOSE, EMIT_ERROR, NO_RUN, OWN_THREAD
from .rows import iso_timestamp

_get_ident = threading.get_ident
_ERROR = logging.ERROR
_LOCAL_NOTE_ENV = "SUPABASE_LOG_LOCAL_NOTE_SHOWN"
_serials = itertools.count(1)
_lifecycle_state = lifecycle._state


def _default_level() -> int:
    explicit = os.environ.get("SUPABASE_LOG_LEVEL")
    if explicit:
        level = logging.getLevelName(explicit.strip().upper())
        return level if isinstance(level, int) else logging.NOTSET
    debug = os.environ.get("DEBUG")
    if debug is not None:
        return (
            logging.DEBUG if debug.strip().lower() in ("1", "true", "yes", "on") else logging.INFO
        )
    return logging.NOTSET


class SupabaseHandler(logging.Handler):
    """Writes every record to the ``logs`` table, grouped under ``runs``.

    All settings are keyword-only and optional; see ``config.FIELDS`` (and the
    README's table) for names, environment variables and defaults.
    """

    def __init__(
        self, level: int | str | None = None, *, env_file: str | None = None, **settings: Any
    ) -> None:
        # Settings first: a constructor that raises must not leave a half-built handler
        # registered with logging (logging.shutdown would call close() on it at exit).
        # A mistake raises only in strict mode; otherwise it is reported and a safe choice made.
        problems: list[Problem] = []
        if _strict(settings):
            loaded = load_settings(settings, env_file=env_file)
        else:
            loaded, problems = load_settings_forgiving(settings, env_file=env_file)
        super().__init__(_default_level() if level is None else level)
        self.settings: Settings = loaded
        s = self.settings
        self.redactor = Redactor(
            enabled=s.redact, extra_keys=s.redact_keys.split(","), literals=[s.key]
        )
        self.diagnostics = Diagnostics(enabled=s.diagnostics, mask=self.redactor.text)
        self.serial = next(_serials)
        self._pipeline = Pipeline(s, redactor=self.redactor, diagnostics=self.diagnostics)
        self._pipeline.serial = self._pipeline.worker.serial = self.serial
        for problem in problems:
            self._report_problem(problem)
        self._excluded_prefixes = tuple(n + "." for n in s.excluded_logger_names)
        self._excluded_names = frozenset(s.excluded_logger_names)
        self._excluded: dict[str, bool] = {}
        self._wake_rows = min(s.max_batch_rows, s.max_queue_rows // 2)  # a batch, or half the queue
        self._block = s.overflow == "block"
        self._local_note_given = False
        context.listen(self)
        lifecycle.register(self)

    def _report_problem(self, problem: Problem) -> None:
        """One line on stderr: what is wrong, and what happens to the rows meanwhile."""
        s = self.settings
        if problem.action == "park":
            self._pipeline.park(problem.message)
            where = f"the spool {s.resolved_spool_path}" if s.spool else "memory (the spool is off)"
            then = (
                "the job goes on; its rows are kept in " + where + " and sent once the key is"
                " fixed (by the next job that has it, or `supabase-log push`)"
            )
        elif problem.action == "local":
            then = f"writing to the local store {s.resolved_local_path} instead"
        elif problem.name:
            then = f"using the default ({FIELDS[problem.name].default!r})"
        else:
            then = "ignored"
        self.diagnostics.report(f"config-{problem.name}", f"{problem.message}; {then}")

    # -- the hot path ----------------------------------------------------------------
    def handle(self, record: logging.LogRecord) -> Any:
        """Filter, then emit, without the handler lock (``emit`` needs none)."""
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a new record
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        state = _lifecycle_state
        if _get_ident() != state["main"]:
            self._emit(record)
            return
        state["depth"] += 1  # a SIGTERM now waits until this record is queued
        try:
            self._emit(record)
        finally:
            state["depth"] -= 1
            if state["pending"] is not None:
                lifecycle.run_pending()

    def _emit(self, record: logging.LogRecord) -> None:
        pipeline = self._pipeline
        intake = pipeline.intake
        try:
            if pipeline.final:
                intake.drops.add(AFTER_CLOSE, _levelno(record))
                return
            if _get_ident() in pipeline.thread_ids:
                intake.drops.add(OWN_THREAD, _levelno(record))
                return
            if self._excluded_names:
                name = record.name
                excluded = self._excluded.get(name)
                if excluded is None:
                    excluded = self._is_excluded(name)
                if excluded:
                    return
            if not pipeline.started and not pipeline.closed:
                self._start()
            d = record.__dict__
            run_id = d.get("run_id")
            step = d.get("step")
            if run_id is None:
                run = context.current_run() or self._implicit_run()
                if run is None:
                    intake.drops.add(NO_RUN, _levelno(record))
                    return
                if self.serial not in run.announced:
                    self._announce(run)
                run_id = run.id
                if step is None:
                    step = context.current_step(run)
            elif step is None:  # e.g. run.logger() inside run.step(...)
                step = context.current_step(context.lookup(str(run_id)))
            item = snapshot.log_item(
                intake.next_seq(), record, str(run_id), None if step is None else str(step)
            )
            levelno = item[2]
            if self._block and intake.assist_builder is None:
                self._wait_for_room(intake)
            intake.offer(item, levelno)
            if levelno >= _ERROR:
                pipeline.worker.hurry = True
                intake.nudge()
                _note_error(str(run_id), item)
            elif not intake.wake_pending and intake.rows >= self._wake_rows:
                intake.nudge()
        except RecursionError:
            raise
        except Exception:
            try:
                intake.drops.add(EMIT_ERROR, _levelno(record))
            finally:
                self.handleError(record)

    def _wait_for_room(self, intake: Any) -> None:
        """``overflow="block"``: wait (at most ``block_timeout_s``) while the queue is full.

        Polls without a lock, so it is safe even inside a signal handler.
        """
        if intake.rows < intake.max_rows and intake.nbytes < intake.max_bytes:
            return
        intake.nudge()
        deadline = time.monotonic() + self.settings.block_timeout_s
        while intake.rows >= intake.max_rows or intake.nbytes >= intake.max_bytes:
            if time.monotonic() >= deadline or not self._pipeline.alive():
                return
            time.sleep(0.001)

    def _is_excluded(self, name: str) -> bool:
        excluded = name in self._excluded_names or name.startswith(self._excluded_prefixes)
        if len(self._excluded) > 10_000:
            self._excluded.clear()
        self._excluded[name] = excluded
        return excluded

    def _start(self) -> None:
        if not self._pipeline.start():
            return
        if (
            not self.settings.uses_supabase
            and not self._local_note_given
            and not os.environ.get(_LOCAL_NOTE_ENV)
        ):
            self._local_note_given = True
            os.environ[_LOCAL_NOTE_ENV] = "1"  # once per process tree, not once per handler
            self.diagnostics.report(
                "local-store",
                f"SUPABASE_URL is not set; writing runs and logs to the local store "
                f"{self.settings.resolved_local_path} (see `supabase-log runs`, `supabase-log push`)",
                error=False,
            )

    def _implicit_run(self) -> RunLike | None:
        joined = pools.joined_run_from_env()
        if joined is not None:
            return joined
        if not self.settings.implicit_run:
            return None
        if lifecycle.exiting():  # after the exit drain: into the last implicit run, not a new one
            last = context.last_implicit_run()
            if last is not None:
                return last
        s = self.settings
        return context.implicit_run(
            lambda: runs.Run(
                s.script_name or default_script_name(), triggered_by=s.triggered_by, implicit=True
            )
        )

    def _announce(self, run: RunLike) -> None:
        """Queue the row that creates ``run`` (once per handler), ahead of its records."""
        run.announced.add(self.serial)
        intake = self._pipeline.intake
        intake.put_control(
            (intake.next_seq(), snapshot.CONTROL_BYTES, snapshot.CONTROL_LEVEL, snapshot.RUN_OPEN, run)
        )

    # -- run events (called by runs.Run) -------------------------------------------------
    def run_opened(self, run: RunLike) -> None:
        if self._pipeline.closed or run.cancelled or self.serial in run.announced:
            return
        self._announce(run)
        if not self._pipeline.started:
            self._start()

    def run_finished(self, run: RunLike, row: dict[str, Any]) -> None:
        if self._pipeline.closed and self.serial not in run.announced:
            return  # closed before this run: nothing of it came here
        self.submit_row("runs", row, merge=True)

    def submit_row(
        self, table: str, row: dict[str, Any], *, merge: bool, hurry: bool = True
    ) -> None:
        """Queue one row for ``table`` ("runs", "logs" or another table), idempotent by ``id``.

        ``merge``: overwrite a stored row with the same id (a state that moves on);
        otherwise a stored row is kept. ``hurry``: send the batch now rather than
        when it is full or ``flush_interval_s`` old. Never blocks, never raises.
        """
        try:
            pipeline = self._pipeline
            intake = pipeline.intake
            size = snapshot.CONTROL_BYTES + snapshot.estimate_bytes(row)
            intake.put_control(
                (intake.next_seq(), size, snapshot.CONTROL_LEVEL, snapshot.ROW, table, row, merge)
            )
            if not pipeline.started and not pipeline.closed:
                self._start()
            if hurry:
                pipeline.worker.hurry = True
                intake.nudge()
        except Exception:
            self.diagnostics.report("submit", f"could not queue a row for {table}")

    def redact_run_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run's row as it may leave the process (error text and metadata masked)."""
        return self._pipeline.redact_run(row)

    def handle_direct(self, record: logging.LogRecord) -> None:
        """Handle a record made by the package itself (run failures, uncaught exceptions)."""
        if self.filter(record) and record.levelno >= self.level:
            self.emit(record)

    def before_fork(self) -> None:
        """Open the implicit run before a fork, so children log into the parent's run."""
        if not self._pipeline.closed and context.current_run() is None and _attached(self):
            self.open_implicit_run()

    def open_implicit_run(self) -> RunLike | None:
        """The process's implicit run (or the joined one), opened now and queued here."""
        run = context.current_run() or self._implicit_run()
        if run is not None and self.serial not in run.announced:
            self._announce(run)
            if not self._pipeline.started and not self._pipeline.closed:
                self._start()
        return run

    # -- control -----------------------------------------------------------------------
    def flush(self, timeout_s: float | None = None) -> bool:  # type: ignore[override]
        """Wait until every record so far is delivered, spooled or dead-lettered.

        Returns False if ``timeout_s`` (default ``shutdown_timeout_s``) ran out first.
        """
        try:
            with lifecycle.critical():
                if self._pipeline.closed:  # logging.shutdown flushes after our exit drain
                    return self._pipeline.ledger.unsettled_rows() == 0
                return self._pipeline.flush(
                    self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
                )
        except Exception:
            return False

    def close(self, timeout_s: float | None = None) -> bool:  # type: ignore[override]
        """Deliver what is pending within ``timeout_s`` (default ``shutdown_timeout_s``), spool the rest.

        Records logged after it are kept and settled at the next ``close`` or at exit.
        """
        done = True
        try:
            with lifecycle.critical():
                done = self._pipeline.close(
                    self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
                )
        except Exception as exc:
            self.diagnostics.report("close", f"error while closing: {exc!r}")
            done = False
        finally:
            super().close()
        return done

    def stats(self) -> dict[str, Any]:
        """The ledger's counters: ``accepted = delivered + spooled_pending + dead_lettered
        + dropped + in_memory``, per table too, and the delivery's own figures."""
        return self._pipeline.stats()

    @property
    def closed(self) -> bool:
        return self._pipeline.closed

    def __repr__(self) -> str:
        target = self.settings.destination.split("|")[0]  # never a key or a password
        return f"<SupabaseHandler {target} ({logging.getLevelName(self.level)})>"


def _note_error(run_id: str, item: tuple[Any, ...]) -> None:
    """Keep the run's last ERROR records (a failure alert shows them)."""
    run = context.lookup(run_id)
    if run is not None:
        run.recent_errors.append(
            {"timestamp": iso_timestamp(item[snapshot.CREATED]), "step": item[snapshot.STEP],
             "message": item[snapshot.MESSAGE][:1000]}
        )


def _strict(settings: dict[str, Any]) -> bool:
    explicit = settings.get("strict")
    if explicit is not None:
        return str(explicit).strip().lower() in ("1", "true", "yes", "on")
    return os.environ.get("SUPABASE_LOG_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


def _levelno(record: logging.LogRecord) -> int:
    levelno = getattr(record, "levelno", logging.INFO)
    return levelno if type(levelno) is int else logging.INFO


def _attached(handler: logging.Handler) -> bool:
    """True when some logger has ``handler`` among its handlers."""
    if handler in logging.getLogger().handlers:
        return True
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and handler in logger.handlers:
            return True
    return False


__all__ = ["FIELDS", "SupabaseHandler"]
