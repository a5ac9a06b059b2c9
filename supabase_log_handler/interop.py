"""structlog and loguru: their records land as rows with their structured fields in ``meta``.

Neither library is a dependency; each is imported only by the helper that needs it.

structlog, through its standard-library integration. Either end the processor
chain with ``render_to_log_kwargs`` (:func:`configure_structlog` does it all), so
the event dict's fields travel as ``extra``::

    from supabase_log_handler import install
    from supabase_log_handler.interop import configure_structlog
    install(); configure_structlog()
    structlog.get_logger("sync").info("fetched", count=150, step="FETCH")

or keep structlog's ``ProcessorFormatter`` set-up (``wrap_for_formatter`` last)
and attach :class:`StructlogSupabaseHandler` instead of ``SupabaseHandler``: it
unpacks the event dict the formatter would have rendered.

loguru, with the handler as a sink (``bind``/``contextualize`` fields and
keyword arguments become ``meta``)::

    from loguru import logger
    from supabase_log_handler.interop import loguru_sink
    logger.add(loguru_sink(), level="INFO")

In both, a ``step`` field sets the row's step and ``run_id`` its run, as
``extra`` does for the standard library.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from .handler import SupabaseHandler
from .snapshot import STANDARD_ATTRS

# Fields processors add that the row already has (level, logger name, time).
_BOOKKEEPING = frozenset(
    {"level", "logger", "logger_name", "timestamp", "_record", "_from_structlog"}
)
_LOG_KWARGS = frozenset({"exc_info", "stack_info", "stacklevel", "event"})


def _safe_key(key: str) -> str:
    """Field names that would clash with LogRecord attributes get a trailing underscore."""
    return key + "_" if key in STANDARD_ATTRS or key in ("message", "asctime") else key


# -- structlog --------------------------------------------------------------------------------
def protect_reserved(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: drop bookkeeping fields, rename fields LogRecord reserves."""
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key in _BOOKKEEPING:
            continue
        out[key if key in _LOG_KWARGS else _safe_key(key)] = value
    return out


def structlog_processors(*extra: Any) -> list[Any]:
    """A processor chain for structlog's stdlib integration that ends in ``render_to_log_kwargs``.

    ``extra`` processors run before the last two steps.
    """
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        *extra,
        protect_reserved,
        structlog.stdlib.render_to_log_kwargs,
    ]


def configure_structlog(*extra: Any, cache_logger_on_first_use: bool = True) -> None:
    """``structlog.configure`` so its loggers hand every event to standard logging, fields as ``extra``."""
    import structlog

    structlog.configure(
        processors=structlog_processors(*extra),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache_logger_on_first_use,
    )


def unpack_structlog_record(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of a ``wrap_for_formatter`` record with the event as message and fields as extras."""
    if not isinstance(record.msg, dict):
        return record
    fields = dict(record.msg)
    attrs = {k: v for k, v in record.__dict__.items() if k not in ("_logger", "_name")}
    copy = logging.makeLogRecord(attrs)
    copy.msg = str(fields.pop("event", ""))
    copy.args = ()
    exc_info = fields.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        copy.exc_info = exc_info
    stack = fields.pop("stack_info", None)
    if isinstance(stack, str):
        copy.stack_info = stack
    for key, value in protect_reserved(None, "", fields).items():
        if key not in _LOG_KWARGS:
            setattr(copy, key, value)
    return copy


class StructlogSupabaseHandler(SupabaseHandler):
    """A SupabaseHandler for structlog's ``ProcessorFormatter`` set-ups (event dicts as messages)."""

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict) and "_logger" in record.__dict__:
            try:
                record = unpack_structlog_record(record)
            except Exception:
                self.handleError(record)
                return
        super().emit(record)


# -- loguru -----------------------------------------------------------------------------------
def _root_supabase_handler() -> SupabaseHandler | None:
    for h in logging.getLogger().handlers:
        if isinstance(h, SupabaseHandler) and not h.closed:
            return h
    return None


def loguru_record(message: Any) -> logging.LogRecord:
    """The standard LogRecord for a loguru message (its ``record`` dict), ``extra`` as attributes."""
    r = message.record
    exc = r["exception"]
    exc_info = (
        (exc.type, exc.value, exc.traceback) if exc is not None and exc.type is not None else None
    )
    level = r["level"]
    record = logging.LogRecord(
        name=r["name"] or "loguru",
        level=int(level.no),
        pathname=r["file"].path,
        lineno=int(r["line"]),
        msg=r["message"],
        args=(),
        exc_info=exc_info,
        func=r["function"],
    )
    record.levelname = level.name
    record.created = r["time"].timestamp()
    record.msecs = (record.created - int(record.created)) * 1000
    record.module = r["module"]
    record.thread, record.threadName = r["thread"].id, r["thread"].name
    record.process, record.processName = r["process"].id, r["process"].name
    for key, value in r["extra"].items():
        setattr(record, _safe_key(str(key)), value)
    return record


def loguru_sink(handler: logging.Handler | None = None, **settings: Any) -> Callable[[Any], None]:
    """A loguru sink writing through ``handler`` (default: root's SupabaseHandler, else a new one)."""
    target: logging.Handler = handler or _root_supabase_handler() or SupabaseHandler(**settings)

    def sink(message: Any) -> None:
        record = loguru_record(message)
        if record.levelno >= target.level:
            target.handle(record)

    sink.handler = target  # type: ignore[attr-defined]
    return sink


__all__ = [
    "StructlogSupabaseHandler",
    "configure_structlog",
    "loguru_record",
    "loguru_sink",
    "protect_reserved",
    "structlog_processors",
    "unpack_structlog_record",
]
