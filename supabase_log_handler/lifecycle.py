"""The process around the handlers: hooks registered when the first handler is built.

Registered, not started (no thread, no I/O), when a handler is constructed:

* Exit: runs this process opened and left open are finished (``error`` after an
  uncaught exception, else ``success``), then every handler drains within its
  ``shutdown_timeout_s`` and spools the rest. The hook is registered after
  ``logging``'s own, so it runs first; ``logging.shutdown`` then settles what
  later ``atexit`` functions logged.
* Fork: before it, the implicit run is opened (children log into it) and a client
  still loading is waited for; ``multiprocessing`` children drain when their
  work ends (they leave through ``os._exit``, which skips ``atexit``). A SIGTERM
  with a Python handler is held over the fork, so a child never runs it inside an
  at-fork hook (where its exit would be ignored).
* SIGTERM (main thread, when the disposition is still the default): the runs are
  failed with "terminated by SIGTERM", the handlers drain, and the process ends
  by the signal as it would have. An application that handles SIGTERM itself
  (its handler was there first, or replaced ours later, as uvicorn and gunicorn
  do) decides alone: its clean exit is a ``success``, with its last lines kept.
  When the process is already exiting, the handlers drain before its handler
  runs (an exit raised there would skip the drain still to come).
* Uncaught exceptions (``sys.excepthook``, ``threading.excepthook``) become ERROR
  rows with their traceback; in the main thread they also fail the runs.

A SIGTERM that arrives while the main thread is inside ``emit`` or a drain or
flush of ours waits for it to end: no lock of ours is ever taken twice by one
thread, and the record being logged is queued before the process ends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
import weakref
from types import FrameType, TracebackType
from typing import Any

from . import context, runlog
from ._jsonsafe import safe_str
from ._types import HandlerLike as SupabaseHandler

_handlers: weakref.WeakSet[SupabaseHandler] = weakref.WeakSet()
_state: dict[str, Any] = {
    "pid": 0,  # the process whose hooks are installed
    "signal": False,  # our SIGTERM handler was installed
    "previous": None,  # the SIGTERM disposition before ours
    "displaced": False,  # the application took SIGTERM over after us
    "uncaught": None,
    "exiting": False,
    "depth": 0,  # main thread inside a drain/flush of ours
    "pending": None,  # a SIGTERM that arrived meanwhile: (signum, frame)
    "terminating": False,
    "sigterms": 0,  # times _on_sigterm started
    "mp_child_hook": False,
    "fork_hooks": False,  # our at-fork hooks are registered (in this interpreter and its forks)
    "exit_status": None,  # what the main thread passed to sys.exit
    "main": threading.main_thread().ident,  # read by emit, to defer a SIGTERM that interrupts it
}


def register(handler: SupabaseHandler) -> None:
    """Install the process hooks for ``handler`` (once per process; signals from the main thread)."""
    _handlers.add(handler)
    _register_fork_hooks()
    settings = handler.settings
    if _state["pid"] != os.getpid():
        _state["pid"] = os.getpid()
        if settings.capture_uncaught:
            _install_excepthooks()
            _install_exit_hook()
        _register_multiprocessing_child_drain()
    if settings.install_signal_handlers:
        _install_sigterm()


def handlers() -> list[SupabaseHandler]:
    """Every handler of this process, open or closed (closed ones may hold late records)."""
    return list(_handlers)


def exiting() -> bool:
    return bool(_state["exiting"])


class critical:
    """Marks the main thread as inside our own drain or flush (see SIGTERM)."""

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            _state["depth"] += 1

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        _state["depth"] -= 1
        run_pending()


def run_pending() -> None:
    """Handle a SIGTERM that arrived while the main thread was inside our code, now that it left."""
    pending = _state["pending"]
    if _state["depth"] == 0 and pending is not None:
        _state["pending"] = None
        _on_sigterm(*pending)


# -- exit ------------------------------------------------------------------------------
def finish_open_runs(error: BaseException | str | None, *, status: str = "success") -> None:
    """Finish every run this process opened and left open."""
    for run in list(context._registry.values()):
        if run.owned and not run.finished:
            run.finish(error=error) if error is not None else run.finish(status)


def drain_all(deadline_s: float | None = None) -> None:
    """Close every handler (or settle what reached a closed one), sharing one deadline."""
    found = handlers()
    if not found:
        return
    budget = deadline_s if deadline_s is not None else max(h.settings.shutdown_timeout_s for h in found)
    deadline = time.monotonic() + budget
    found.sort(key=lambda h: not h.closed)  # closed ones first: they let go of their spool files
    with critical():
        for h in found:
            h.close(max(deadline - time.monotonic(), 0.05))
    from . import jobwatch

    jobwatch.wait_for_alerts(deadline)  # a failure alert still being sent, within the same deadline


def _at_exit() -> None:
    _state["exiting"] = True
    try:
        uncaught = _state["uncaught"]
        error: BaseException | str | None = (
            uncaught if uncaught is not None else getattr(sys, "last_value", None)
        )
        if error is None:
            error = _exit_error()
        finish_open_runs(error)
        drain_all()
    except Exception:  # never turn a clean exit into a traceback
        pass


def _exit_error() -> str | None:
    """``sys.exit(...)`` with a message or a non-zero code: an ERROR row, and the run's error."""
    status = _state["exit_status"]
    if status is None or status == 0:
        return None
    message = f"exited with code {status}" if isinstance(status, int) else safe_str(status)
    if context.current_run() is not None:
        runlog.log_message_error(message)
    return message


atexit.register(_at_exit)


# -- uncaught exceptions -----------------------------------------------------------------
def _emit_uncaught(
    etype: type[BaseException], value: BaseException, tb: TracebackType | None, where: str
) -> None:
    if context.current_run() is None:
        return
    if value.__traceback__ is None:
        value = value.with_traceback(tb)
    runlog.log_exception(
        None, value, f"Uncaught exception in {where}: {etype.__qualname__}: {safe_str(value)}"
    )


def _install_excepthooks() -> None:
    previous = sys.excepthook
    previous_thread = threading.excepthook

    def excepthook(
        etype: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        try:
            if not issubclass(etype, SystemExit):
                _state["uncaught"] = value
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


def _install_exit_hook() -> None:
    """Remember what the main thread passes to ``sys.exit`` (the interpreter tells nobody)."""
    original = sys.exit

    def exit(status: object = None) -> None:
        if threading.current_thread() is threading.main_thread() and _state["exit_status"] is None:
            _state["exit_status"] = status
        original(status)  # type: ignore[arg-type]

    exit.__doc__ = original.__doc__
    sys.exit = exit  # type: ignore[assignment]


# -- SIGTERM -------------------------------------------------------------------------------
def _install_sigterm() -> None:
    if _state["signal"] or threading.current_thread() is not threading.main_thread():
        return
    try:
        _state["previous"] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
        _state["signal"] = True
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        pass


def notice_takeover() -> None:
    """Note whether the application has replaced our SIGTERM handler (polled by the worker)."""
    if _state["signal"] and not _state["displaced"]:
        current = signal.getsignal(signal.SIGTERM)
        if current is not _on_sigterm and callable(current):
            _state["displaced"] = True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _state["sigterms"] += 1  # read by _sigwatch: the handler did run
    if _state["terminating"]:  # a second SIGTERM (multiprocessing sends several)
        return
    if _state["depth"] > 0:  # we interrupted our own drain: finish it first
        _state["pending"] = (signum, frame)
        return
    previous = _state["previous"]
    if callable(previous):  # the application was first: it decides
        if _state["exiting"] or _mp_exiting():
            # Its exit would skip the drain that was about to run (a pool worker that
            # was already leaving when Pool.terminate() signalled it): drain first.
            with contextlib.suppress(Exception):
                drain_all()
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    _state["terminating"] = True
    try:
        if _state["displaced"]:  # it had stopped cleanly, then handed the signal back
            finish_open_runs(None)
        else:
            finish_open_runs("terminated by SIGTERM")
        drain_all()
    except Exception:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


# -- fork and multiprocessing ------------------------------------------------------------
def _mp_exiting() -> bool:
    """A multiprocessing process inside its exit function (before or in its finalizers)."""
    mp_util = sys.modules.get("multiprocessing.util")
    return bool(getattr(mp_util, "_exiting", False))


def _register_multiprocessing_child_drain() -> None:
    """In a multiprocessing child (spawn, forkserver), drain when the work ends."""
    if "multiprocessing" not in sys.modules:
        return
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        _child_started(None, watch=False)  # called by a constructor: no thread, no pipe here


def _child_started(_: object, *, watch: bool = True) -> None:
    import multiprocessing.util as mp_util

    try:
        mp_util.Finalize(None, drain_all, exitpriority=100)
        if watch and _state["signal"]:  # Pool.terminate() sends SIGTERM to workers waiting for a task
            from . import _sigwatch

            _sigwatch.arm(lambda: _state["sigterms"],
                          lambda: signal.getsignal(signal.SIGTERM) is _on_sigterm)  # fmt: skip
    finally:
        _release_sigterm()  # held over the fork: its handler may now run, and its exit propagates


class _Marker:
    """A long-lived object multiprocessing keys its after-fork registry on."""


_marker = _Marker()


def _before_fork() -> None:
    for handler in handlers():
        with contextlib.suppress(Exception):
            handler.before_fork()
    if "multiprocessing" in sys.modules and not _state["mp_child_hook"] and _handlers:
        import multiprocessing.util as mp_util

        mp_util.register_after_fork(_marker, _child_started)
        _state["mp_child_hook"] = True
    _hold_sigterm()


# A SIGTERM that reaches a forked child while it runs its at-fork hooks (a pool worker
# still starting when Pool.terminate() signals it) would run a Python handler inside a
# hook, where CPython ignores the exception it raises (SystemExit): the signal would be
# gone and Pool.__exit__ would wait for that worker for ever. So a handled SIGTERM is
# blocked over the fork, and let through in the child where an exception propagates: a
# multiprocessing child at its first after-fork callback (_child_started), another
# child as the package's last at-fork hook returns.
_held = threading.local()  # the forking thread's signal mask before the hold


def _hold_sigterm() -> None:
    _held.mask = None
    if not _handlers or not callable(signal.getsignal(signal.SIGTERM)):
        return  # the default action needs no Python code: nothing can swallow it
    with contextlib.suppress(AttributeError, OSError, ValueError):
        _held.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _release_sigterm() -> None:
    mask, _held.mask = getattr(_held, "mask", None), None
    if mask is not None and signal.SIGTERM not in mask:
        with contextlib.suppress(OSError, ValueError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    from . import _sigwatch

    _sigwatch.disarm_after_fork()
    _state.update(
        depth=0, pending=None, terminating=False, pid=os.getpid(), main=threading.get_ident()
    )
    caller = sys._getframe(1).f_globals.get("__name__") if hasattr(sys, "_getframe") else None
    if not (caller == "multiprocessing.popen_fork" and _state["mp_child_hook"]):
        _release_sigterm()  # a SIGTERM now runs its handler once fork() has returned


def _register_fork_hooks() -> None:
    """Once per interpreter (a child inherits them), from the first handler's constructor:
    registered after the pipeline's, ours run first before a fork (the implicit run is
    opened, then the pipeline waits for its sender) and last in the child (every copy of
    the parent's state is reset before a held SIGTERM may run its handler)."""
    if not _state["fork_hooks"]:
        _state["fork_hooks"] = True
        os.register_at_fork(before=_before_fork, after_in_parent=_release_sigterm,
                            after_in_child=_after_fork_in_child)  # fmt: skip


def reset() -> None:
    """Forget the process state kept here (for tests)."""
    _state.update(
        uncaught=None, exiting=False, depth=0, pending=None, terminating=False, exit_status=None
    )
