"""A SIGTERM whose Python handler would never run: noticed, and the main thread woken.

CPython runs a signal's Python handler on the main thread, between two bytecodes
or when a blocking call is interrupted. A signal that arrives just before the
main thread enters a blocking wait that does not watch for it (a
multiprocessing pool worker reaching for its task queue's lock as
``Pool.terminate()`` sends SIGTERM) only marks the handler as due: the wait goes
on, the handler never runs, and ``Pool.__exit__`` waits for that worker forever.

In forked multiprocessing children, where this happens, ``arm()`` points the
interpreter's wakeup fd at a pipe (only when nothing else uses it) and a small
thread reads it: when a SIGTERM came and the handler has not run soon after,
the thread sends SIGTERM to the main thread itself, which interrupts the wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

from ._threads import start_without_signals, without_signals

KICK_AFTER_S = 0.2  # how long the handler may take to start before the main thread is woken
KICKS = 25  # at most this many wake-ups per SIGTERM
_armed = {"read": -1, "write": -1}  # this process's pipe, if armed
_counts = {"signals": 0, "kicks": 0}  # SIGTERMs the watcher looked at, wake-ups it sent
_decided = threading.Condition()  # notified each time the watcher is done with a SIGTERM


def wait_for_signals(count: int, timeout_s: float) -> dict[str, int]:
    """Wait until the watcher is done with ``count`` SIGTERMs (or the deadline); its counts."""
    with _decided:
        _decided.wait_for(lambda: _counts["signals"] >= count, timeout_s)
        return dict(_counts)


def arm(handled_count: Callable[[], int], ours: Callable[[], bool]) -> bool:
    """From the main thread: watch for SIGTERMs whose handler does not run.

    ``handled_count()`` counts the times the handler started; ``ours()`` says whether
    the installed SIGTERM handler is still the one to help (another handler is left
    alone: a second SIGTERM can mean "stop now" to it). Returns True if armed.
    """
    if not hasattr(signal, "pthread_kill") or threading.current_thread() is not threading.main_thread():
        return False
    first_seen = handled_count()  # before any signal can write to the pipe
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return False
    try:
        os.set_blocking(write_fd, False)
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read_fd)
        os.close(write_fd)
        return False
    if previous != -1:  # the application (an event loop) uses it: leave it alone
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return False
    _armed.update(read=read_fd, write=write_fd)
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        # The handler count is read before each wait for a byte, never after it: a
        # handler that ran between the signal and this thread's waking (the main
        # thread is often first to the GIL) counts as run, and is not run again.
        seen = first_seen
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM not in data:
                continue
            pause = threading.Event()
            kicked = False
            for _ in range(KICKS):
                if handled_count() != seen or not ours():
                    break
                pause.wait(KICK_AFTER_S)
                if handled_count() != seen or not ours():
                    break
                try:
                    signal.pthread_kill(main, signal.SIGTERM)
                except (OSError, ValueError):
                    return
                kicked = True
                _counts["kicks"] += 1
            if kicked:  # our own wake-ups wrote bytes too: they are not new signals
                _drain(read_fd)
            seen = handled_count()
            with _decided:
                _counts["signals"] += 1
                _decided.notify_all()

    thread = threading.Thread(target=without_signals(watch), name="supabase-log-signals", daemon=True)
    try:
        start_without_signals(thread)
    except RuntimeError:  # no new threads (interpreter shutdown)
        signal.set_wakeup_fd(-1)
        os.close(read_fd)
        os.close(write_fd)
        return False
    return True


def disarm_after_fork() -> None:
    """In a forked child (main thread): the pipe is the parent's, and its watcher did not
    come along; a signal here must not wake the parent's watcher."""
    global _decided
    _decided = threading.Condition()  # the parent's watcher may have held its lock
    _counts.update(signals=0, kicks=0)
    read_fd, write_fd = _armed["read"], _armed["write"]
    if write_fd == -1:
        return
    _armed.update(read=-1, write=-1)
    try:
        current = signal.set_wakeup_fd(-1)
        if current != write_fd:
            signal.set_wakeup_fd(current)
    except (ValueError, OSError):
        pass
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def _drain(fd: int) -> None:
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 4096):
            pass
    except OSError:  # nothing more (BlockingIOError), or closed
        pass
    finally:
        os.set_blocking(fd, True)
