"""What a wrapped Python program prints becomes rows (``supabase-log run``, Python mode).

``_inject/sitecustomize.py`` calls :func:`install` with the handler that
``autoattach.attach`` added, unless ``SUPABASE_LOG_CAPTURE_PRINT=false`` (which
``supabase-log run --no-capture-print`` sets). ``sys.stdout`` and ``sys.stderr``
are then wrapped by a :class:`LineCapture` that passes every write through
unchanged and turns each complete line into an INFO record (logger ``print``,
``meta.stream`` = ``stdout`` or ``stderr``, ``meta.log`` at the ``print()`` call)
handed straight to that handler, so no console handler of the program prints the
line a second time. Not captured:

* writes made while a logging handler runs (a ``StreamHandler`` on stdout, the
  handler's own notes): the record is stored already, or is the handler's;
* what the interpreter itself writes with no Python code below it (the traceback
  of an uncaught exception, the message of ``sys.exit("...")``): the run records
  those as its ERROR row; the excepthooks are wrapped for the same reason;
* blank lines; a ``\\r`` keeps only what follows it (progress bars).

A write never raises because of the capture and never waits: the record goes to
``SupabaseHandler.emit``, which never blocks.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Any

from . import lifecycle
from .diagnostics import PREFIX

ENV_CAPTURE_PRINT = "SUPABASE_LOG_CAPTURE_PRINT"
LOGGER_NAME = "print"
MAX_LINE_CHARS = 65536  # a longer line without a newline is stored in parts
_FALSE = {"0", "false", "no", "off"}
_streams: list[LineCapture] = []
_get_ident = threading.get_ident
_NOTHING: tuple[str, None] = ("", None)
_hooks: dict[str, Any] = {}


def enabled(environ: Any = None) -> bool:
    """False when ``SUPABASE_LOG_CAPTURE_PRINT`` turns the capture off."""
    value = (os.environ if environ is None else environ).get(ENV_CAPTURE_PRINT, "")
    return value.strip().lower() not in _FALSE


def _quiet(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` with capture off while it runs (every such wrapper shares one code object)."""

    def quiet(*args: Any) -> Any:
        return hook(*args)

    quiet.__wrapped__ = hook  # type: ignore[attr-defined]
    return quiet


# While a frame runs one of these, what is written is not the program's print().
_SKIP: frozenset[CodeType] = frozenset(
    {
        logging.Handler.handle.__code__,
        logging.Logger.callHandlers.__code__,
        _quiet(print).__code__,
    }
)


def _where(frame: FrameType) -> tuple[str, int, str]:
    code = frame.f_code
    return code.co_filename, frame.f_lineno, code.co_name


def _after_carriage_return(text: str) -> str:
    if "\r" not in text:
        return text
    cut = text.rfind("\r", 0, len(text) - 1)
    return text[cut + 1 :] if cut >= 0 else text


class LineCapture:
    """A text stream that writes through to ``stream`` and hands complete lines to ``handler``."""

    def __init__(self, stream: Any, name: str, handler: logging.Handler) -> None:
        self._stream = stream
        self._name = name
        self._handler = handler
        # Unfinished line and where it began, per thread, so two threads' lines never mix.
        self._partial: dict[int, tuple[str, tuple[str, int, str] | None]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    @property
    def wrapped(self) -> Any:
        """The stream this one writes to."""
        return self._stream

    def write(self, text: str) -> int:
        with lifecycle.critical():  # a SIGTERM now waits until the line is recorded too
            written: int = self._stream.write(text)
            try:
                frame = sys._getframe(1)  # the code that called write()
            except ValueError:  # none: the interpreter reports an exit or a traceback itself
                return written
            self._capture(text, frame)
            return written

    def writelines(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        self._stream.writelines(lines)
        try:
            frame = sys._getframe(1)
        except ValueError:
            return
        self._capture("".join(lines), frame)

    def _capture(self, text: str, frame: FrameType) -> None:
        try:
            f: FrameType | None = frame
            while f is not None:
                if f.f_code in _SKIP:  # written by a logging handler, or an excepthook
                    return
                f = f.f_back
            if not text or text.__class__ is not str:
                return
            ident = _get_ident()
            partial = self._partial
            start, where = partial.pop(ident, _NOTHING)
            if "\n" not in text:  # print() writes each argument and separator apart: cheap path
                rest = start + text
                if len(rest) <= MAX_LINE_CHARS:
                    partial[ident] = (rest, where or _where(frame))
                    return
                lines, rest = [rest], ""
            else:
                *lines, rest = (start + text).split("\n")
            where = where or _where(frame)  # a line is located where its first part was written
            for line in lines:
                self._emit(line, where)
                where = None
            if rest:
                partial[ident] = (rest, where or _where(frame))
        except Exception:  # print() must never fail because of the capture
            pass

    def _emit(self, line: str, where: tuple[str, int, str] | None) -> None:
        line = _after_carriage_return(line.rstrip("\r")).rstrip()  # a \r keeps what follows it
        if not line.strip() or line.startswith(PREFIX):
            return
        handler = self._handler
        if handler.level > logging.INFO:
            return
        path, lineno, function = where or ("<print>", 0, "<module>")
        record = logging.LogRecord(
            LOGGER_NAME, logging.INFO, path, lineno, line, None, None, func=function
        )
        record.__dict__["meta"] = {"stream": self._name}
        # emit(), not handle(): the attached handler's filter steps aside for records that a
        # SupabaseHandler of the program sees, and no handler of the program sees a print().
        handler.emit(record)

    def flush_partial(self) -> None:
        """Store the lines that never got their newline (at exit)."""
        for ident in list(self._partial):
            text, where = self._partial.pop(ident, ("", None))
            if text:
                self._emit(text, where or ("<print>", 0, "<module>"))

    def forget_partial(self) -> None:
        self._partial.clear()


def install(handler: logging.Handler) -> bool:
    """Wrap ``sys.stdout`` and ``sys.stderr`` for ``handler`` (once); False when turned off."""
    if not enabled() or _streams:
        return False
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None or isinstance(stream, LineCapture):
            continue
        capture = LineCapture(stream, name, handler)
        setattr(sys, name, capture)
        _streams.append(capture)
    _hooks["sys"] = sys.excepthook
    _hooks["threading"] = threading.excepthook
    sys.excepthook = _quiet(sys.excepthook)
    threading.excepthook = _quiet(threading.excepthook)
    if not _hooks.get("registered"):
        _hooks["registered"] = True
        atexit.register(_at_exit)  # runs before the exit drain, which registered earlier
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork)
    return True


def uninstall() -> None:
    """Put the original streams and excepthooks back (where nobody replaced them since)."""
    for capture in _streams:
        name = capture._name
        if getattr(sys, name, None) is capture:
            setattr(sys, name, capture.wrapped)
    _streams.clear()
    for module in (sys, threading):
        original = _hooks.pop(module.__name__, None)
        if original is not None and getattr(module.excepthook, "__wrapped__", None) is original:
            setattr(module, "excepthook", original)  # noqa: B010 - both modules, one line


def _at_exit() -> None:
    for capture in _streams:
        capture.flush_partial()


def _after_fork() -> None:
    for capture in _streams:
        capture.forget_partial()  # the parent stores its own unfinished lines
