"""The process around the handlers: exit, signals, uncaught exceptions, implicit runs.

* At exit, runs this process opened and never finished are finished (``error``
  after an uncaught exception, else ``success``), then every live handler drains
  within its ``shutdown_timeout_s`` and spools the rest. The hook is registered
  after ``logging``'s own, so it runs first.
* SIGTERM fails the process's open runs with "terminated by SIGTERM", drains,
  then hands over to whatever handler the application had installed (or to the
  default action, which ends the process as before).
* Uncaught exceptions (``sys.excepthook``, ``threading.excepthook``) become ERROR
  rows with their traceback; in the main thread they also fail the runs.
* Forked children of ``multiprocessing`` drain when the child ends normally.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from . import context, runs
from ._jsonsafe import safe_str

if TYPE_CHECKING:
    from .handler import SupabaseHandler

_handlers: weakref.WeakSet[SupabaseHandler] = weakref.WeakSet()
_lock = threading.RLock()
_hooks_installed_pid = 0
_signal_installed = False
_previous_sigterm: Any = None
_uncaught: BaseException | None = None
_implicit: runs.Run | None = None


def track(handler: SupabaseHandler) -> None:
    _handlers.add(handler)


def live_handlers() -> list[SupabaseHandler]:
    return [h for h in list(_handlers) if not h.closed]


def implicit_run(script_name: str, triggered_by: str | None) -> runs.Run:
    """The one run per process for records logged outside ``start_run``."""
    global _implicit
    with _lock:
        if _implicit is None or (_implicit.finished and _implicit.owned):
            _implicit = runs.Run(script_name, triggered_by=triggered_by, implicit=True)
            _implicit.activate()
        return _implicit


def on_first_use(handler: SupabaseHandler) -> None:
    """Install the process hooks once per process (signals only from the main thread)."""
    global _hooks_installed_pid
    with _lock:
        if _hooks_installed_pid != os.getpid():
            _hooks_installed_pid = os.getpid()
            if handler.settings.capture_uncaught:
                _install_excepthooks()
            _register_multiprocessing_drain()
        if handler.settings.install_signal_handlers:
            _install_sigterm()


# -- exit ------------------------------------------------------------------------------
def finish_open_runs(error: BaseException | str | None) -> None:
    """Finish every run this process opened and left open."""
    for run in list(context._registry.values()):
        if run.owned and not run.finished:
            run.finish(error=error) if error is not None else run.finish("success")


_drain_owner: int | None = None  # thread draining right now
_drain_finished = threading.Event()
_drain_finished.set()
_sigterm_pending = False  # SIGTERM arrived on top of a drain: re-raise it when the drain ends
_drain_budget_s = 0.0


def drain_all(deadline_s: float | None = None) -> None:
    """Close every live handler, sharing one deadline."""
    global _drain_owner, _drain_budget_s
    handlers = live_handlers()
    if not handlers:
        return
    budget = (
        deadline_s
        if deadline_s is not None
        else max(h.settings.shutdown_timeout_s for h in handlers)
    )
    _drain_budget_s = budget
    deadline = time.monotonic() + budget
    _drain_owner = threading.get_ident()
    _drain_finished.clear()
    try:
        for h in handlers:
            h.close(max(deadline - time.monotonic(), 0.05))
    finally:
        _drain_owner = None
        _drain_finished.set()
        if _sigterm_pending and threading.current_thread() is threading.main_thread():
            _die_by_sigterm()


def _at_exit() -> None:
    try:
        error = _uncaught if _uncaught is not None else getattr(sys, "last_value", None)
        finish_open_runs(error)
        drain_all()
    except Exception:  # never turn a clean exit into a traceback
        pass


atexit.register(_at_exit)


# -- uncaught exceptions -----------------------------------------------------------------
def _emit_uncaught(
    etype: type[BaseException], value: BaseException, tb: TracebackType | None, where: str
) -> None:
    if context.current_run() is None:
        return
    if value.__traceback__ is None:
        value = value.with_traceback(tb)
    runs.log_exception(
        None, value, f"Uncaught exception in {where}: {etype.__qualname__}: {safe_str(value)}"
    )


def _install_excepthooks() -> None:
    previous = sys.excepthook
    previous_thread = threading.excepthook

    def excepthook(
        etype: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        global _uncaught
        try:
            if not issubclass(etype, SystemExit):
                _uncaught = value
                _emit_uncaught(etype, value, tb, "the main thread")
        except Exception:
            pass
        previous(etype, value, tb)

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        try:
            if args.exc_value is not None and not issubclass(args.exc_type, SystemExit):
                name = args.thread.name if args.thread is not None else "a thread"
                _emit_uncaught(args.exc_type, args.exc_value, args.exc_traceback, f"thread {name}")
        except Exception:
            pass
        previous_thread(args)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


# -- SIGTERM -------------------------------------------------------------------------------
def _install_sigterm() -> None:
    global _signal_installed, _previous_sigterm
    if _signal_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        _previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
        _signal_installed = True
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        pass


_terminating = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminating, _sigterm_pending
    if (
        _terminating
    ):  # a second SIGTERM (multiprocessing sends several) must not cut the drain short
        return
    previous = _previous_sigterm
    if _drain_owner == threading.get_ident() and not callable(previous):
        # We interrupted this thread's own exit drain: let it finish, then die as asked.
        _sigterm_pending = previous != signal.SIG_IGN
        return
    _terminating = True
    if _drain_owner is not None:  # another thread is draining: let it finish first
        _drain_finished.wait(_drain_budget_s + 1.0)
    try:
        finish_open_runs("terminated by SIGTERM")
        if callable(previous):
            for handler in live_handlers():
                handler.flush()
        else:
            drain_all()
    except Exception:
        pass
    if callable(previous):
        _terminating = False
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        _terminating = False
        return
    else:
        _die_by_sigterm()


def _die_by_sigterm() -> None:
    """End the process the way the default SIGTERM action would."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


# -- multiprocessing ---------------------------------------------------------------------
def _register_multiprocessing_drain() -> None:
    """Make forked ``multiprocessing`` children drain when their work ends normally."""
    if "multiprocessing" not in sys.modules:
        return
    import multiprocessing.util as mp_util

    mp_util.register_after_fork(_drain_marker, _child_started)


class _DrainMarker:
    """A long-lived object multiprocessing can key its after-fork registry on."""


_drain_marker = _DrainMarker()


def _child_started(_: object) -> None:
    import multiprocessing.util as mp_util

    mp_util.Finalize(None, drain_all, exitpriority=100)


def _after_fork_in_child() -> None:
    global _lock, _terminating, _sigterm_pending, _drain_owner, _drain_finished
    _lock = threading.RLock()
    _terminating = False
    _sigterm_pending = False
    _drain_owner = None
    _drain_finished = threading.Event()
    _drain_finished.set()
    # Signal handlers are inherited; hooks are inherited; nothing to install again.


os.register_at_fork(after_in_child=_after_fork_in_child)
