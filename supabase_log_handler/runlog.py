"""What is logged into a run besides the job's own records.

The rows the package writes itself (the traceback of an exception that ended a
run or was never caught, the message a job gave ``sys.exit``), and ``RunLogger``,
the ``LoggerAdapter`` that carries a run's id and a step on every record.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import MutableMapping
from typing import Any

from . import context
from ._types import RunLike as Run

ERROR = "ERROR"


def log_exception(
    run: Run | None, exc: BaseException, message: str, *, meta: dict[str, Any] | None = None
) -> None:
    """Write one ERROR row with the traceback of ``exc``, once per exception object.

    Used for an exception that ends a run and for uncaught exceptions; the mark on
    the exception keeps the second from repeating the first.
    """
    if getattr(exc, "__supabase_log_handler_logged__", False):
        return
    with contextlib.suppress(Exception):
        exc.__supabase_log_handler_logged__ = True  # type: ignore[attr-defined]
    pathname, lineno, func = _raised_at(exc)
    record = logging.LogRecord(
        name="supabase_log_handler.run",
        level=logging.ERROR,
        pathname=pathname,
        lineno=lineno,
        msg=message,
        args=None,
        exc_info=(type(exc), exc, exc.__traceback__),
        func=func,
    )
    if run is not None:
        record.run_id = run.id
    record.step = ERROR
    if meta:
        record.meta = meta
    for listener in context.listeners():
        listener.handle_direct(record)


def log_message_error(message: str) -> None:
    """Write one ERROR row (step ERROR) with ``message``, e.g. what the job passed to ``sys.exit``."""
    record = logging.LogRecord(
        name="supabase_log_handler.run",
        level=logging.ERROR,
        pathname="",
        lineno=0,
        msg="%s",
        args=(message,),
        exc_info=None,
    )
    record.step = ERROR
    for listener in context.listeners():
        listener.handle_direct(record)


def _raised_at(exc: BaseException) -> tuple[str, int, str | None]:
    """File, line and function where ``exc`` was raised (the innermost frame)."""
    tb = exc.__traceback__
    if tb is None:
        return "", 0, None
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return code.co_filename, tb.tb_lineno, code.co_name



class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A LoggerAdapter that carries ``run_id`` and ``step``, and takes ``meta=``.

    ``log = run.logger(__name__)``; ``log.step("SAVE").info("saved %d", n, meta={"n": n})``.
    """

    def __init__(self, logger: logging.Logger, run: Run, *, step: str | None = None) -> None:
        super().__init__(logger, {})
        self.run = run
        self._step = step

    def step(self, name: str) -> RunLogger:
        """The same logger with another step."""
        return RunLogger(self.logger, self.run, step=name)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        meta = kwargs.pop("meta", None)
        step = kwargs.pop("step", None) or self._step
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("run_id", self.run.id)
        if step is not None:
            extra.setdefault("step", step)
        if meta is not None:
            extra["meta"] = (
                {**extra.get("meta", {}), **meta} if isinstance(extra.get("meta"), dict) else meta
            )
        kwargs["extra"] = extra
        return msg, kwargs


def exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
