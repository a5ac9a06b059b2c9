"""Runs: one ``runs`` row per execution of a job, and the helpers around it.

``start_run`` makes a :class:`Run` current at once (context variable, plus the
process-wide fallback when no other run holds it) and queues its row on every
live handler; nothing waits on the network. The run id is made here, so log rows
can point at it immediately; the run's row travels ahead of them in the same
stream, and its final state after them. A run is finished by the process that
opened it (``with``, the decorator, ``finish()``, or at exit); a forked child or
a process that joined through ``SUPABASE_LOG_RUN_ID`` only logs into it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from decimal import Decimal

from . import _jsonsafe, context
from ._ids import new_id
from .runlog import RunLogger, log_exception
from .triggers import detect_triggered_by

F = TypeVar("F", bound=Callable[..., Any])

ENV_RUN_ID = "SUPABASE_LOG_RUN_ID"
ENV_RUN_SCRIPT = "SUPABASE_LOG_RUN_SCRIPT"

START, FETCH, LOAD, VALIDATE, PROCESS, ANALYZE, MERGE, UPSERT, SAVE, END, ERROR = (
    "START",
    "FETCH",
    "LOAD",
    "VALIDATE",
    "PROCESS",
    "ANALYZE",
    "MERGE",
    "UPSERT",
    "SAVE",
    "END",
    "ERROR",
)
STEPS = (START, FETCH, LOAD, VALIDATE, PROCESS, ANALYZE, MERGE, UPSERT, SAVE, END, ERROR)
METRICS = (
    "records_fetched",
    "records_inserted",
    "records_updated",
    "records_failed",
    "calls_analyzed",
    "api_cost",
)



def _utc(value: dt.datetime | dt.date | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.astimezone(dt.timezone.utc).isoformat()
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).isoformat()


class Run:
    """One execution of a job; context manager, decorator and metric holder."""

    def __init__(
        self,
        script_name: str,
        *,
        triggered_by: str | None = None,
        batch_id: str | None = None,
        sync_mode: str | None = None,
        sync_start_date: dt.datetime | dt.date | str | None = None,
        sync_end_date: dt.datetime | dt.date | str | None = None,
        metadata: dict[str, Any] | None = None,
        run_id: str | None = None,
        owned: bool = True,
        implicit: bool = False,
    ) -> None:
        detected, ci_meta = detect_triggered_by()
        self.id = run_id or new_id()
        self.script_name = script_name
        self.triggered_by = triggered_by or detected
        self.batch_id = str(batch_id) if batch_id is not None else None
        self.sync_mode = sync_mode
        self.sync_start_date = _utc(sync_start_date)
        self.sync_end_date = _utc(sync_end_date)
        self.metadata: dict[str, Any] = {**ci_meta, **(metadata or {})}
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._t0 = time.monotonic()
        self.status = "running"
        self.error_message: str | None = None
        self.finished_at: dt.datetime | None = None
        self.duration_ms: int | None = None
        self.owner_pid = os.getpid() if owned else -1
        self.implicit = implicit
        self.cancelled = False
        self.current_step: str | None = None
        self.failed_step: str | None = None
        self._metrics: dict[str, int | Decimal | None] = dict.fromkeys(METRICS)
        # Re-entrant: a SIGTERM handler may finish the run while the main thread is in run.add().
        self._lock = threading.RLock()
        self.announced: set[int] = set()  # handlers (by serial) that have queued the open row
        self.recent_errors: deque[dict[str, Any]] = deque(maxlen=5)  # for a failure alert
        self._tokens: list[Any] = []
        self._env_saved: tuple[str | None, str | None] | None = None

    # -- state -------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status != "running" or self.cancelled

    @property
    def owned(self) -> bool:
        """True in the process that opened the run (not in forks or joined processes)."""
        return self.owner_pid == os.getpid()

    def open_row(self) -> dict[str, Any] | None:
        """The row that creates the run (status running), or None if cancelled."""
        if self.cancelled:
            return None
        return {
            "id": self.id,
            "script_name": self.script_name,
            "triggered_by": self.triggered_by,
            "started_at": self.started_at.isoformat(),
            "status": "running",
            "batch_id": self.batch_id,
            "sync_mode": self.sync_mode,
            "sync_start_date": self.sync_start_date,
            "metadata": _jsonsafe.to_jsonable(self.metadata),
        }

    def final_row(self) -> dict[str, Any]:
        """The run's full state, written last (safe to write again)."""
        row = self.open_row() or {}
        row.update(
            status=self.status,
            error_message=self.error_message,
            finished_at=self.finished_at.isoformat() if self.finished_at else None,
            duration_ms=self.duration_ms,
            sync_end_date=self.sync_end_date,
        )
        for name, value in self._metrics.items():
            row[name] = value if value is None or isinstance(value, int) else float(value)
        return row

    def progress(self) -> dict[str, Any]:
        """The metrics so far (what a heartbeat shows while the run goes on)."""
        with self._lock:
            out: dict[str, Any] = {
                name: value if value is None or isinstance(value, int) else float(value)
                for name, value in self._metrics.items()
            }
        if self.sync_end_date is not None:
            out["sync_end_date"] = self.sync_end_date
        return out

    # -- metrics -----------------------------------------------------------------------
    def set(self, **values: Any) -> Run:
        """Set metrics, ``sync_end_date``, ``sync_mode`` or ``batch_id``: ``run.set(records_fetched=150)``."""
        with self._lock:
            for name, value in values.items():
                if name in METRICS:
                    self._metrics[name] = _number(name, value)
                elif name in ("sync_end_date", "sync_start_date"):
                    setattr(self, name, _utc(value))
                elif name in ("sync_mode", "batch_id"):
                    setattr(self, name, None if value is None else str(value))
                else:
                    raise TypeError(
                        f"unknown run field {name!r}; use run.metadata for free-form data"
                    )
        return self

    def add(self, **amounts: int | float | Decimal) -> Run:
        """Add to metrics, thread-safe: ``run.add(records_inserted=10, api_cost=0.02)``."""
        with self._lock:
            for name, amount in amounts.items():
                if name not in METRICS:
                    raise TypeError(f"unknown metric {name!r}; metrics are {', '.join(METRICS)}")
                current = self._metrics[name] or 0
                self._metrics[name] = _number(
                    name,
                    _decimal(current) + _decimal(amount)
                    if name == "api_cost"
                    else int(current) + int(amount),
                )
        return self

    def __getattr__(self, name: str) -> Any:
        if name in METRICS:
            return self._metrics[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in METRICS:
            self.set(**{name: value})
        else:
            object.__setattr__(self, name, value)

    # -- steps and loggers -------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Run]:
        """Every record inside the block gets ``step=name`` (``with run.step("FETCH"):``)."""
        previous = self.current_step
        token = context.set_step(name)
        self.current_step = name
        try:
            yield self
        except BaseException:
            if self.failed_step is None:
                self.failed_step = name  # the innermost step the exception escaped from
            raise
        finally:
            context.reset_step(token)
            self.current_step = previous

    def logger(self, name: str | None = None, *, step: str | None = None) -> RunLogger:
        """A LoggerAdapter that carries this run's id (and a step) on every record."""
        return RunLogger(logging.getLogger(name), self, step=step)

    # -- lifecycle ---------------------------------------------------------------------
    def activate(self) -> Run:
        """Tell the handlers, then make the run current here and for child processes.

        The handlers queue the run's row first, so no record can point at the run
        before its row is on its way.
        """
        context.register(self)
        for listener in context.listeners():
            listener.run_opened(self)
        self._tokens.append(context.set_run(self))
        context.claim_process_run(self)
        if self.owned and context.process_run() is self:
            self._env_saved = (os.environ.get(ENV_RUN_ID), os.environ.get(ENV_RUN_SCRIPT))
            os.environ[ENV_RUN_ID] = self.id
            os.environ[ENV_RUN_SCRIPT] = self.script_name
        return self

    def finish(self, status: str | None = None, error: BaseException | str | None = None) -> Run:
        """Record the end: status (success unless an error is given), duration, metrics. Idempotent."""
        with self._lock:
            if self.finished or not self.owned:
                return self
            if error is not None:
                status = "error"
                self.error_message = error if isinstance(error, str) else _error_text(error)
            self.status = status or "success"
            if self.status not in ("success", "error"):
                raise ValueError("status must be 'success' or 'error'")
            self.finished_at = dt.datetime.now(dt.timezone.utc)
            self.duration_ms = int((time.monotonic() - self._t0) * 1000)
        row = self.final_row()
        handlers = context.listeners()
        for listener in handlers:
            listener.run_finished(self, row)
        self._deactivate()
        context.release(self)
        if self.status == "error" and handlers:
            from . import jobwatch

            settings = handlers[0].settings
            jobwatch.run_failed(handlers[0].redact_run_row(row), list(self.recent_errors),
                                settings, settings.shutdown_timeout_s)  # fmt: skip
        return self

    def _deactivate(self) -> None:
        while self._tokens:
            context.reset_run(self._tokens.pop())
        context.release_process_run(self)
        if self._env_saved is not None:
            for var, old in zip((ENV_RUN_ID, ENV_RUN_SCRIPT), self._env_saved, strict=False):
                if old is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = old
            self._env_saved = None

    def cancel(self) -> None:
        """Forget a run that never started (the decorator's template)."""
        self.cancelled = True
        self._deactivate()
        context.forget(self.id)

    def __enter__(self) -> Run:
        if context.current_run() is not self:
            self.activate()
        return self

    def __exit__(self, etype: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.finish("success")
            return
        log_exception(
            self,
            exc,
            f"{self.script_name} failed: {_error_text(exc)}",
            meta={"failed_step": self.failed_step or context.current_step(self)},
        )
        self.finish(error=exc)

    def __call__(self, func: F) -> F:
        """Use as a decorator: each call of ``func`` is a new run with these settings."""
        template = self
        template.cancel()

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with template._clone():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def _clone(self) -> Run:
        return Run(
            self.script_name,
            triggered_by=self.triggered_by,
            batch_id=self.batch_id,
            sync_mode=self.sync_mode,
            sync_start_date=self.sync_start_date,
            metadata=dict(self.metadata),
        ).activate()

    def __repr__(self) -> str:
        return f"<Run {self.script_name} {self.id} {self.status}>"


def _decimal(value: Any) -> Decimal:
    from decimal import Decimal  # only runs that record an API cost need it

    return Decimal(str(value))


def _number(name: str, value: Any) -> int | Decimal | None:
    if value is None:
        return None
    if name == "api_cost":
        return _decimal(value)
    return int(value)


def _error_text(error: BaseException) -> str:
    text = _jsonsafe.safe_str(error)
    name = type(error).__qualname__
    return f"{name}: {text}" if text else name


def start_run(
    script_name: str,
    *,
    triggered_by: str | None = None,
    batch_id: str | None = None,
    sync_mode: str | None = None,
    sync_start_date: dt.datetime | dt.date | str | None = None,
    metadata: dict[str, Any] | None = None,
    schedule: str | Mapping[str, Any] | None = None,
) -> Run:
    """Open a run now and make it current; use it with ``with``, as a decorator, or call ``finish()``.

    ``schedule`` (a cron expression, or the keywords of ``declare_schedule`` with ``cron``)
    declares when the job is expected to run, in the background, once per process.
    """
    if not context.listeners():
        context.install()
    if triggered_by is None:  # the handler's setting (keyword, environment or .env), if any
        triggered_by = next(
            (h.settings.triggered_by for h in context.listeners() if h.settings.triggered_by), None
        )
    run = Run(
        script_name,
        triggered_by=triggered_by,
        batch_id=batch_id,
        sync_mode=sync_mode,
        sync_start_date=sync_start_date,
        metadata=metadata,
    ).activate()
    if schedule is not None:
        from . import jobwatch

        jobwatch.declare(script_name, schedule)
    return run
