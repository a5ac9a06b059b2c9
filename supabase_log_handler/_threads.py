"""What the pipeline's threads need from the interpreter: signals kept away from them, and
knowing when the caller holds ``logging``'s module lock (so a close does not wait on a
thread that needs it)."""

from __future__ import annotations

import contextlib
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


def holds_logging_lock() -> bool:
    """True when this thread holds ``logging``'s module lock (dictConfig, logging.shutdown)."""
    import logging

    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    try:
        return bool(is_owned()) if is_owned is not None else False
    except Exception:
        return False
