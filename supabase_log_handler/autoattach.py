"""Attach the handler to an unmodified Python program started by ``supabase-log run``.

``supabase-log run -- python job.py`` puts ``supabase_log_handler/_inject`` first
on ``PYTHONPATH``; its ``sitecustomize.py`` calls :func:`attach` in every Python
process of the run (the job and any Python child it starts), before the job's
own code. ``attach`` joins the run named by ``SUPABASE_LOG_RUN_ID`` and adds one
:class:`~supabase_log_handler.SupabaseHandler` to the root logger while keeping
the program's own logging working exactly as it would without it:

* ``logging.basicConfig`` would be a no-op once root has a handler, and
  ``dictConfig``/``fileConfig`` remove root's handlers and close every handler:
  all three are wrapped so the program's configuration applies and the
  SupabaseHandler stays attached, once, and open.
* Root's level is lowered to the capture level (INFO, or ``SUPABASE_LOG_LEVEL``
  / ``DEBUG=true``) so records reach the handler; the program's own handlers get
  a filter that hides what only the lowered level let through, and a stand-in
  for ``logging.lastResort`` prints what would have been printed with no
  handler at all.
* If the program configures its own SupabaseHandler, the attached one steps
  aside for the records that handler sees (no duplicate rows).
"""

from __future__ import annotations

import functools
import logging
import logging.config
import os
import sys
from collections.abc import Callable
from typing import Any

from . import context, pools, runs
from .handler import SupabaseHandler, _default_level

_handler: SupabaseHandler | None = None
_fallback: logging.Handler | None = None
_pid = 0
_script_level = logging.WARNING  # root's level as the program set it (or Python's default)
_capture_level = logging.INFO
_originals: dict[str, Any] = {}
_OWN_THREADS = "supabase-log-"  # the pipeline's thread names


def attached() -> SupabaseHandler | None:
    """The handler :func:`attach` added in this process, if any."""
    return _handler if _pid == os.getpid() else None


def attach() -> SupabaseHandler | None:
    """Join the run of ``SUPABASE_LOG_RUN_ID`` and attach a SupabaseHandler to root (once)."""
    global _handler, _fallback, _pid, _script_level, _capture_level
    if _pid == os.getpid() and _handler is not None:
        return _handler
    if not os.environ.get(runs.ENV_RUN_ID):
        return None
    level = _default_level()
    _capture_level = level if level != logging.NOTSET else logging.INFO
    handler = SupabaseHandler(level=_capture_level)
    handler._local_note_given = True  # the wrapper already said where the local store is
    handler.addFilter(_NotHandledElsewhere(handler))
    pools.joined_run_from_env()  # current from the start, so an early uncaught exception is logged
    _handler, _fallback, _pid = handler, _LastResortStandIn(), os.getpid()
    root = logging.getLogger()
    _script_level = root.level
    _patch()
    _sync()
    return handler


def detach() -> None:
    """Undo :func:`attach` in this process (``supabase-log`` itself never wants it)."""
    global _handler, _fallback, _pid
    handler, fallback = _handler, _fallback
    if handler is None or _pid != os.getpid():
        return
    root = logging.getLogger()
    for h in (handler, fallback):
        if h is not None:
            root.removeHandler(h)
    for name, original in _originals.items():
        module = logging.config if name in ("dictConfig", "fileConfig") else logging
        setattr(module, name, original)
    _originals.clear()
    root.__dict__.pop("setLevel", None)
    root.__dict__.pop("addHandler", None)
    logging.Logger.setLevel(root, _script_level)
    joined = context.lookup(os.environ.get(runs.ENV_RUN_ID, ""))
    if joined is not None and not joined.owned:
        context.release_process_run(joined)
        context.forget(joined.id)
    handler.close(1.0)
    _handler, _fallback, _pid = None, None, 0


# -- keeping root configured ----------------------------------------------------------------
def _ours(h: logging.Handler) -> bool:
    return h is _handler or h is _fallback


def _sync() -> None:
    """After any configuration change: our handlers on root once, levels and filters in place."""
    root = logging.getLogger()
    for h in (_handler, _fallback):
        if h is not None and h not in root.handlers:
            root.addHandler(h)
    _apply_level()
    loggers = [
        root,
        *(
            lg
            for lg in logging.Logger.manager.loggerDict.values()
            if isinstance(lg, logging.Logger)
        ),
    ]
    for lg in loggers:
        for h in lg.handlers:
            if not _ours(h):
                h.addFilter(_SCRIPT_LEVEL)


def _apply_level() -> None:
    root = logging.getLogger()
    target = _script_level if _script_level <= _capture_level else _capture_level
    logging.Logger.setLevel(root, target)


def _root_set_level(level: int | str) -> None:
    """Root's ``setLevel`` while attached: remember the program's level, keep capturing."""
    global _script_level
    checked = logging._checkLevel(level)  # type: ignore[attr-defined]
    _script_level = int(checked)
    _apply_level()


def _root_add_handler(handler: logging.Handler) -> None:
    """Root's ``addHandler`` while attached: the program's handlers get the level filter."""
    logging.Logger.addHandler(logging.getLogger(), handler)
    if not _ours(handler):
        handler.addFilter(_SCRIPT_LEVEL)


def _original_level(name: str) -> int:
    """The effective level the record's logger would have had without the lowered root."""
    logger = logging.Logger.manager.loggerDict.get(name)
    while isinstance(logger, logging.Logger) and logger is not logging.getLogger():
        if logger.level:
            return logger.level
        logger = logger.parent
    return _script_level


class _ScriptLevelFilter(logging.Filter):
    """On the program's handlers: drop what only the lowered root level let through,
    and what the handler's own threads log (httpx's request lines, for instance)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.threadName).startswith(_OWN_THREADS):
            return False
        if _script_level <= _capture_level:
            return True
        return record.levelno >= _original_level(record.name)


_SCRIPT_LEVEL = _ScriptLevelFilter()


def _chain_handlers(name: str) -> list[logging.Handler]:
    """Every handler a record of logger ``name`` meets on its way up."""
    found: list[logging.Handler] = []
    logger: Any = logging.Logger.manager.loggerDict.get(name)
    if not isinstance(logger, logging.Logger):
        logger = logging.getLogger()
    while logger is not None:
        found.extend(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    return found


class _LastResortStandIn(logging.Handler):
    """Does what ``logging.lastResort`` would have done had root no handler of ours."""

    def emit(self, record: logging.LogRecord) -> None:
        last = logging.lastResort
        if last is None or record.levelno < last.level:
            return
        if any(not _ours(h) for h in _chain_handlers(record.name)):
            return
        last.handle(record)


class _NotHandledElsewhere(logging.Filter):
    """On the attached handler: skip records a SupabaseHandler of the program also sees."""

    def __init__(self, handler: SupabaseHandler) -> None:
        super().__init__()
        self._handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        for h in _chain_handlers(record.name):
            if isinstance(h, SupabaseHandler) and h is not self._handler and not h.closed:
                return False
        return True


# -- wrapping the configuration functions ---------------------------------------------------
def _patch() -> None:
    if _originals:
        return
    root = logging.getLogger()
    root.setLevel = _root_set_level  # type: ignore[method-assign]
    root.addHandler = _root_add_handler  # type: ignore[method-assign, assignment]
    _originals["basicConfig"] = logging.basicConfig
    _originals["dictConfig"] = logging.config.dictConfig
    _originals["fileConfig"] = logging.config.fileConfig
    logging.basicConfig = _wrap(logging.basicConfig, detach_from_root=True)
    logging.config.dictConfig = _wrap(logging.config.dictConfig, detach_from_root=False)
    logging.config.fileConfig = _wrap(logging.config.fileConfig, detach_from_root=False)
    for name in ("debug", "info", "warning", "error", "exception", "critical", "log"):
        _originals[name] = getattr(logging, name)
        setattr(logging, name, _module_function(getattr(logging, name)))


def _wrap(original: Callable[..., Any], *, detach_from_root: bool) -> Callable[..., Any]:
    @functools.wraps(original)
    def configure(*args: Any, **kwargs: Any) -> Any:
        root = logging.getLogger()
        ours = [h for h in (_handler, _fallback) if h is not None]
        if detach_from_root:  # basicConfig only acts on a root without handlers
            for h in ours:
                root.removeHandler(h)
        _hide_from_shutdown(ours)  # dictConfig/fileConfig close every known handler
        try:
            return original(*args, **kwargs)
        finally:
            _sync()
            for h in ours:
                _register_for_shutdown(h)

    return configure


# Frames to skip for this wrapper: from 3.11 ``stacklevel`` counts only frames outside
# logging (ours is one); before, it also counts logging's own module-level function.
_EXTRA_STACKLEVEL = 1 if sys.version_info >= (3, 11) else 2


def _module_function(original: Callable[..., Any]) -> Callable[..., Any]:
    """``logging.info()`` & co. call basicConfig() when root has no handlers: keep that."""

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        if all(_ours(h) for h in logging.getLogger().handlers):
            logging.basicConfig()
        kwargs["stacklevel"] = int(kwargs.get("stacklevel", 1)) + _EXTRA_STACKLEVEL
        return original(*args, **kwargs)

    return call


def _hide_from_shutdown(handlers: list[logging.Handler]) -> None:
    lock: Any = getattr(logging, "_lock", None)
    refs: Any = getattr(logging, "_handlerList", None)
    if lock is None or refs is None:
        return
    with lock:
        refs[:] = [r for r in refs if r() not in handlers]


def _register_for_shutdown(handler: logging.Handler) -> None:
    add: Any = getattr(logging, "_addHandlerRef", None)
    refs: Any = getattr(logging, "_handlerList", None)
    if add is None or refs is None:
        return
    if not any(r() is handler for r in refs):
        add(handler)
