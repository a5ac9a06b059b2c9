"""What the pipeline's threads need from the interpreter: signals kept away from them, and
knowing when the caller holds ``logging``'s module lock (so a close does not wait on a
thread that needs it)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

_ASYNC_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM",
                  "SIGCHLD", "SIGWINCH")  # fmt: skip


def without_signals(target: Callable[[], None]) -> Callable[[], None]:
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


def start_without_signals(thread: threading.Thread) -> None:
    """Start ``thread`` with the asynchronous signals already blocked: a new thread
    inherits its creator's mask, so it never has a moment in which the kernel could
    hand it a signal (its target should still be wrapped in ``without_signals``, for
    platforms without ``pthread_sigmask``). A signal that arrives meanwhile waits, and
    is delivered to this thread when its mask is restored."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    wanted = {getattr(signal, name) for name in _ASYNC_SIGNALS if hasattr(signal, name)}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    except (OSError, ValueError):
        thread.start()
        return
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def holds_logging_lock() -> bool:
    """True when this thread holds ``logging``'s module lock (dictConfig, logging.shutdown)."""
    import logging

    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    try:
        return bool(is_owned()) if is_owned is not None else False
    except Exception:
        return False
