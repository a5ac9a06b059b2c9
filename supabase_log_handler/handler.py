"""``SupabaseHandler``: the stdlib ``logging.Handler`` users attach.

``emit`` is the only code on the caller's thread: it skips the client's own
loggers and the handler's own threads, snapshots the record (``rows.py``) and
puts it on the queue. It never blocks (unless ``overflow="block"`` was chosen,
and then only up to ``block_timeout_s``) and never raises: failures go to
``handleError``. Everything else happens in the pipeline (``pipeline.py``).
The constructor is the dictConfig contract: keyword-only scalars, validated at
once, no I/O and no threads.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from . import context, lifecycle, runs
from ._redact import Redactor
from .config import FIELDS, Settings, default_script_name, load_settings
from .diagnostics import Diagnostics
from .pipeline import Pipeline
from .rows import format_exception, snapshot_extras

_get_ident = threading.get_ident
_getpid = os.getpid
_ERROR = logging.ERROR
_WARNING = logging.WARNING
_LOCAL_NOTE_ENV = "SUPABASE_LOG_LOCAL_NOTE_SHOWN"
ROW_OVERHEAD_BYTES = 512  # measured: a queued row costs about this much besides its message


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
        loaded = load_settings(settings, env_file=env_file)
        super().__init__(_default_level() if level is None else level)
        self.settings: Settings = loaded
        s = self.settings
        self.redactor = Redactor(
            enabled=s.redact, extra_keys=s.redact_keys.split(","), literals=[s.key]
        )
        self.diagnostics = Diagnostics(enabled=s.diagnostics, mask=self.redactor.text)
        self._pipeline = Pipeline(s, redactor=self.redactor, diagnostics=self.diagnostics)
        self._excluded_prefixes = tuple(n + "." for n in s.excluded_logger_names)
        self._excluded_names = frozenset(s.excluded_logger_names)
        self._excluded: dict[str, bool] = {}
        self._announced: runs.Run | None = None
        self._closed = False
        self._shed = s.overflow == "shed"
        self._wake_rows = min(s.max_batch_rows, s.max_queue_rows // 2)  # a batch, or half the queue
        self._local_note_given = False
        runs._listeners.add(self)
        lifecycle.track(self)

    # -- the hot path ----------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            pipeline = self._pipeline
            if self._closed or _get_ident() in pipeline.thread_ids:
                return
            name = record.name
            excluded = self._excluded.get(name)
            if excluded is None:
                excluded = self._is_excluded(name)
            if excluded:
                return
            if not pipeline.started:
                self._start()
            levelno = record.levelno
            d = record.__dict__
            run_id = d.get("run_id")
            step = d.get("step")
            if run_id is not None and step is None:  # e.g. run.logger() inside run.step(...)
                step = context.current_step(context.lookup(str(run_id)))
            if run_id is None:
                run = context.current_run() or self._implicit_run()
                if run is None:
                    return
                run_id = run.id
                if step is None:
                    step = context.current_step(run)
                if run is not self._announced:
                    self._announce(run)
            queue = pipeline.queue
            if levelno < _WARNING and self._shed and queue.full():
                queue.last_drop_run = str(run_id)
                queue.count_dropped(levelno)  # it would be shed anyway: skip the work
                return
            try:
                # The rendered message only: time, level and logger have columns of their own, so
                # a formatter (basicConfig puts one on every handler it is given) does not apply.
                message = record.getMessage()
            except Exception as error:  # "%d" with a str, a __str__ that raises...: keep the row
                message = _unformattable(record, error)
            exc = format_exception(record) if (record.exc_info or record.stack_info) else None
            # A flat plain tuple, not a Snapshot: the garbage collector stops tracking tuples
            # of plain values, so a long queue costs no collection time (the worker names the fields).
            snap = (
                "log",
                record.created,
                levelno,
                record.levelname,
                message,
                name,
                record.pathname,
                record.lineno,
                record.funcName,
                record.threadName,
                record.process,
                exc,
                str(run_id),
                None if step is None else str(step),
                snapshot_extras(record),
            )
            size = len(message) + ROW_OVERHEAD_BYTES + (len(exc[2]) if exc else 0)
            if not self._shed and queue.pressure() >= 1.0:
                queue.wait_for_space(self.settings.block_timeout_s)
            queue.put(snap, size, levelno)
            worker = pipeline.worker
            if levelno >= _ERROR:
                worker.hurry = True
                worker.wake.set()
            elif queue.rows >= self._wake_rows and not worker.wake.is_set():
                worker.wake.set()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _is_excluded(self, name: str) -> bool:
        excluded = name in self._excluded_names or name.startswith(self._excluded_prefixes)
        if len(self._excluded) > 10_000:
            self._excluded.clear()
        self._excluded[name] = excluded
        return excluded

    def _start(self) -> None:
        self._pipeline.start()
        lifecycle.on_first_use(self)
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

    def _implicit_run(self) -> runs.Run | None:
        joined = runs.joined_run_from_env()
        if joined is not None:
            return joined
        if not self.settings.implicit_run:
            return None
        return lifecycle.implicit_run(
            self.settings.script_name or default_script_name(), self.settings.triggered_by
        )

    def _announce(self, run: runs.Run) -> None:
        self._announced = run
        if run.id not in self._pipeline.sender_known_runs:
            self._pipeline.sender_known_runs.add(run.id)
            self._pipeline.queue.put_control(("run_open", run))

    # -- run events (called by runs.Run) -------------------------------------------------
    def run_opened(self, run: runs.Run) -> None:
        if self._closed or run.cancelled:
            return
        if not self._pipeline.started:
            self._start()
        self._announce(run)

    def run_finished(self, run: runs.Run, row: dict[str, Any]) -> None:
        if self._closed:
            return
        if not self._pipeline.started:
            self._start()
        self._pipeline.queue.put_control(("run_final", self._redact_run(row)))
        self._pipeline.worker.hurry = True
        self._pipeline.worker.wake.set()

    def _redact_run(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run's state as it may leave the process: error text and metadata masked."""
        out = dict(row)
        if out.get("error_message"):
            out["error_message"] = self.redactor.text(str(out["error_message"]))
        if out.get("metadata"):
            out["metadata"] = self.redactor.value(out["metadata"])
        return out

    def handle_direct(self, record: logging.LogRecord) -> None:
        """Handle a record made by the package itself (run failures, uncaught exceptions)."""
        if self.filter(record) and record.levelno >= self.level:
            self.emit(record)

    # -- control -----------------------------------------------------------------------
    def flush(self, timeout_s: float | None = None) -> bool:  # type: ignore[override]
        """Wait until every record so far is delivered, spooled or dead-lettered.

        Returns False if ``timeout_s`` (default ``shutdown_timeout_s``) ran out first.
        """
        try:
            if self._closed:  # logging.shutdown flushes again after our exit drain closed us
                return self._pipeline.queue.wait_done(self._pipeline.queue.last_seq(), 0)
            return self._pipeline.flush(
                self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
            )
        except Exception:
            return False

    def close(self, timeout_s: float | None = None) -> bool:  # type: ignore[override]
        """Deliver what is pending within ``timeout_s`` (default ``shutdown_timeout_s``), spool the rest."""
        done = True
        try:
            if not self._closed:
                self._closed = True
                done = self._pipeline.close(
                    self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
                )
        except Exception as exc:
            self.diagnostics.report("close", f"error while closing: {exc!r}")
            done = False
        finally:
            runs._listeners.discard(self)
            super().close()
        return done

    def stats(self) -> dict[str, Any]:
        """Counters: enqueued, sent, batches, retries, spooled, replayed, dead_lettered, dropped per level, last_error."""
        return self._pipeline.stats_dict()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        target = self.settings.url or f"local:{self.settings.resolved_local_path}"
        return f"<SupabaseHandler {target} ({logging.getLevelName(self.level)})>"


def _unformattable(record: logging.LogRecord, exc: Exception) -> str:
    from ._jsonsafe import safe_repr, safe_str

    return f"{safe_str(record.msg)} [message formatting failed: {safe_repr(exc)}; args: {safe_repr(record.args)}]"


def install(
    level: int | str = logging.INFO, *, console: bool = True, **settings: Any
) -> SupabaseHandler:
    """Attach a SupabaseHandler to the root logger (once) and return it.

    With ``console`` and no other root handler, a plain stderr handler is added as
    well so the job's output still shows. The root level is lowered to ``level``
    if it is higher.
    """
    root = logging.getLogger()
    for existing in root.handlers:
        if isinstance(existing, SupabaseHandler) and not existing.closed:
            return existing
    handler = SupabaseHandler(**settings)
    if console and not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
    root.addHandler(handler)
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    if isinstance(numeric, int) and handler.level != logging.NOTSET:
        numeric = min(numeric, handler.level)  # SUPABASE_LOG_LEVEL=DEBUG / DEBUG=true
    if isinstance(numeric, int) and (root.level == logging.NOTSET or root.level > numeric):
        root.setLevel(numeric)
    return handler


__all__ = ["FIELDS", "SupabaseHandler", "install"]
